//! The DARTS evaluation network: the paper's parameter count, PyTorch state_dict names, the
//! auxiliary head and drop-path in training mode, eval-mode determinism, genotype files.

use nasrs::autograd::Tape;
use nasrs::nas::eval_model::{resolve_genotype, EvalConfig, EvalNetwork};
use nasrs::nas::{Genotype, Mode};
use nasrs::{Cpu, Rng, Tensor};

fn config(name: &str, c: usize, l: usize, classes: usize, aux: bool) -> EvalConfig {
    EvalConfig {
        genotype: Genotype::builtin(name).unwrap(),
        channels: c,
        layers: l,
        classes,
        in_channels: 3,
        auxiliary: aux,
    }
}

#[test]
fn darts_v2_has_the_papers_parameter_count() {
    let be: Cpu = Cpu::new();
    let net = EvalNetwork::new(&be, config("DARTS_V2", 36, 20, 10, false), 0).unwrap();
    // DARTS (second order) on CIFAR-10: 3.3M; utils.count_parameters_in_MB prints 3.349342.
    assert_eq!(net.num_weights(), 3_349_342);
    assert_eq!(net.weights.numel(), 3_349_342);
    // The auxiliary head adds parameters that the paper's count leaves out.
    let aux = EvalNetwork::new(&be, config("DARTS_V2", 36, 20, 10, true), 0).unwrap();
    assert_eq!(aux.num_weights(), 3_349_342);
    // C_aux = 4 * 144 = 576: conv 576*128, BN 2*128, conv 128*768*4, BN 2*768, linear 768*10+10.
    let head = 576 * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * 10 + 10;
    assert_eq!(aux.weights.numel(), 3_349_342 + head);
}
