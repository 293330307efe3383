//! Hostile genotype files never panic `resolve_genotype`: DARTS_V2's JSON, mutated (ops and
//! inputs, concat lists, extra nodes, tuples of the wrong arity, any JSON edit or text
//! rewrite), must read or give an error naming the file, and a genotype that reads must build
//! and run a network without a panic; `Genotype::from_weights` takes tables of any shape and
//! any values. The harness, the allocation cap and the mutations are shared
//! (common/fuzz.rs, common/mutate.rs).

mod common;

use common::fuzz::{no_exception, small_config, CappedAlloc, Fuzz, TempDir};
use common::mutate::{hostile_value, mutate_bytes, mutate_json, mutate_json_text, pick};
use nasrs::nas::eval_model::{resolve_genotype, validate_genotype, EvalConfig, EvalNetwork};
use nasrs::nas::evaluate::eval_logits;
use nasrs::nas::genotype::{Genotype, Primitive};
use nasrs::{Cpu, Rng, Tensor};
use serde_json::{json, Value};

// The allocation cap (common/fuzz.rs): a size taken from a header unchecked aborts the run.
#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

/// Op names and inputs a genotype file might hold, well-formed or not.
fn hostile_op(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => json!(pick(rng, &Primitive::ALL.map(|p| p.name()))),
        1 => json!(pick(
            rng,
            &["sep_conv_9x9", "SEP_CONV_3X3", " none", "", "NaN"]
        )),
        _ => hostile_value(rng),
    }
}

/// A random op pair of `cell`, if the genotype still has one.
fn op_pair<'a>(rng: &mut Rng, g: &'a mut Value, cell: &str) -> Option<(usize, &'a mut Vec<Value>)> {
    let ops = g.get_mut(cell)?.as_array_mut().filter(|a| !a.is_empty())?;
    let k = rng.below(ops.len());
    let pair = ops[k].as_array_mut().filter(|p| p.len() == 2)?;
    Some((k, pair))
}

/// A mutation of a genotype file. Falls back to a byte mutation when an earlier one left
/// nothing to mutate structurally.
fn mutate_genotype(rng: &mut Rng, text: &mut Vec<u8>) -> String {
    let Some(mut g) = serde_json::from_slice::<Value>(text)
        .ok()
        .filter(Value::is_object)
    else {
        return format!("bytes: {}", mutate_bytes(rng, text));
    };
    let cell = pick(rng, &["normal", "reduce"]);
    let concat = format!("{cell}_concat");
    let what = match rng.below(10) {
        0..=1 => None,
        2 => return format!("text: {}", mutate_json_text(rng, text)),
        3 => op_pair(rng, &mut g, cell).map(|(k, pair)| {
            pair[0] = hostile_op(rng);
            format!("{cell}[{k}] op = {}", pair[0])
        }),
        4 => op_pair(rng, &mut g, cell).map(|(k, pair)| {
            pair[1] = if rng.bernoulli(0.5) {
                json!(rng.below(12))
            } else {
                hostile_value(rng)
            };
            format!("{cell}[{k}] input = {}", pair[1])
        }),
        5 => g
            .get_mut(&concat)
            .and_then(Value::as_array_mut)
            .filter(|c| !c.is_empty())
            .map(|c| {
                let k = rng.below(c.len());
                c[k] = if rng.bernoulli(0.5) {
                    json!(rng.below(12))
                } else {
                    hostile_value(rng)
                };
                format!("{concat}[{k}] = {}", c[k])
            }),
        6 => {
            // More nodes: pairs appended that read valid earlier states, all concatenated.
            let extra = 1 + rng.below(8);
            let states = g.get_mut(cell).and_then(Value::as_array_mut).map(|ops| {
                for _ in 0..extra {
                    let node = ops.len() / 2;
                    let p = pick(rng, &Primitive::ALL[1..]).name();
                    ops.push(json!([p, rng.below(node + 2)]));
                    ops.push(json!([p, rng.below(node + 2)]));
                }
                ops.len() / 2 + 2
            });
            states.map(|states| {
                g[&concat] = json!((2..states).collect::<Vec<_>>());
                format!("{cell} grew {extra} nodes")
            })
        }
        7 => op_pair(rng, &mut g, cell).map(|(k, pair)| {
            // A tuple with the wrong arity.
            if rng.bernoulli(0.5) {
                pair.pop();
            } else {
                pair.push(json!(0));
            }
            format!("{cell}[{k}] has {} items", pair.len())
        }),
        _ => {
            let mut path = "genotype".to_string();
            mutate_json(rng, &mut g, &mut path);
            Some(path)
        }
    };
    match what {
        Some(what) => {
            *text = serde_json::to_vec_pretty(&g).unwrap();
            what
        }
        None => format!("bytes: {}", mutate_bytes(rng, text)),
    }
}

/// Builds and runs a tiny network from a genotype the reader accepted: any error is clean, but
/// a genotype `resolve_genotype` accepts must never panic the network code.
fn use_genotype(be: &Cpu<f32>, g: Genotype) {
    let config = EvalConfig {
        layers: 3,
        ..small_config(g)
    };
    if let Ok(mut net) = EvalNetwork::new(be, config, 1) {
        let x = Tensor::from_host(be, &[0.25f32; 64], [1, 1, 8, 8].as_slice()).unwrap();
        let _ = eval_logits(be, &mut net, &x);
    }
}

#[test]
fn genotype_reader_survives_mutations() {
    let mut fz = Fuzz::new("genotype", 0x6e70_0004, 500);
    let tmp = TempDir::new("genotype");
    let be = Cpu::new();
    let darts = Genotype::builtin("DARTS_V2").unwrap();
    let valid = darts.to_json().into_bytes();
    let good = tmp.0.join("genotype.json");
    std::fs::write(&good, &valid).unwrap();
    assert_eq!(resolve_genotype(good.to_str().unwrap()).unwrap(), darts);
    for case in 0..fz.cases {
        let mut rng = fz.rng(case);
        let mut text = valid.clone();
        let rounds = if rng.bernoulli(0.3) {
            2 + rng.below(2)
        } else {
            1
        };
        let what: Vec<String> = (0..rounds)
            .map(|_| mutate_genotype(&mut rng, &mut text))
            .collect();
        let mutation = what.join(", then ");
        let path = tmp.0.join(format!("case-{case}.json"));
        std::fs::write(&path, &text).unwrap();
        let spec = path.to_str().unwrap();
        let named = [path.as_path()];
        let read = fz.check(
            case,
            &mutation,
            "resolve_genotype",
            &named,
            no_exception,
            || resolve_genotype(spec),
        );
        if let Some(g) = read {
            fz.no_panic(case, &mutation, "building a network from it", || {
                use_genotype(&be, g)
            });
        }
        let _ = std::fs::remove_file(&path);
    }
    fz.finish();
}

/// `Genotype::from_weights` (the search's alphas to a genotype, alphas that come from a
/// checkpoint on resume) with tables of any shape and any values: an error or a valid genotype.
#[test]
fn genotype_from_weights_survives_any_table() {
    let mut fz = Fuzz::new("from_weights", 0xa1fa_0005, 500);
    for case in 0..fz.cases {
        let mut rng = fz.rng(case);
        let mut ops: Vec<Primitive> = Primitive::ALL
            .into_iter()
            .filter(|_| rng.bernoulli(0.6))
            .collect();
        rng.shuffle(&mut ops);
        let steps = if rng.bernoulli(0.1) {
            20 + rng.below(20)
        } else {
            rng.below(6)
        };
        let multiplier = rng.below(steps + 3);
        let edges = steps * (steps + 3) / 2;
        // Mostly the right shape (so that the values are what is tested), now and then
        // the wrong number of rows or one row of the wrong length.
        let table = |rng: &mut Rng| -> Vec<Vec<f64>> {
            let rows = if rng.bernoulli(0.9) {
                edges
            } else {
                rng.below(edges + 3)
            };
            let odd_row = rng.bernoulli(0.1).then(|| rng.below(rows.max(1)));
            (0..rows)
                .map(|r| {
                    let cols = if odd_row == Some(r) {
                        rng.below(ops.len() + 3)
                    } else {
                        ops.len()
                    };
                    (0..cols)
                        .map(|_| match rng.below(12) {
                            0 => f64::NAN,
                            1 => f64::INFINITY,
                            2 => f64::NEG_INFINITY,
                            3 => 0.0,
                            _ => rng.uniform(),
                        })
                        .collect()
                })
                .collect()
        };
        let (normal, reduce) = (table(&mut rng), table(&mut rng));
        let mutation = format!(
            "ops {ops:?}, steps {steps}, multiplier {multiplier}, {}x{:?} / {}x{:?} weights",
            normal.len(),
            normal.first().map(Vec::len),
            reduce.len(),
            reduce.first().map(Vec::len)
        );
        let made = fz.check(case, &mutation, "from_weights", &[], no_exception, || {
            Genotype::from_weights(&normal, &reduce, &ops, steps, multiplier)
        });
        if let Some(g) = made {
            if let Err(e) = validate_genotype(&g) {
                fz.fail(case, &mutation, format!("an invalid genotype: {e}"));
            }
        }
    }
    fz.finish();
}
