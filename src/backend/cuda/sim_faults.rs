//! Proof that the `cuda-sim` simulation is not a no-op: each deliberately wrong kernel of
//! kernels/sim/faults.cu (a copy of a real kernel with one defect) goes through its
//! generated launcher on the simulated device, and the simulation catches it the way the
//! parity checks and the memory guards would catch the same bug in a real kernel. Each
//! test runs the correct kernel through the same check first, so the check itself is shown
//! to pass on good code and fail on the bug.

use super::{cfg1d, kernels, Cuda, CudaBuf, BLOCK, ONE_BLOCK};
use crate::backend::prelude::*;
use crate::backend::selftest::max_error;
use crate::error::Result;
use crate::rng::Rng;
use crate::Cpu;

fn sim() -> Cuda {
    Cuda::open_sim().expect("the simulation opens")
}

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect()
}

/// Odd sizes, several blocks: the bugs below need more than one warp and block to show.
const N: usize = 5 * 256 + 77;

#[test]
fn wrong_index_fails_parity() -> Result<()> {
    let (d, cpu) = (sim(), Cpu::new());
    let (planes, h, w) = (3usize, 9usize, 7usize);
    let host = random(planes * h * w, 1);
    let xd = crate::Nchw {
        n: 1,
        c: planes,
        h,
        w,
    };
    let want = cpu.shift_crop_fwd(&host, xd)?;
    let x = d.upload(&host)?;
    let good = d.shift_crop_fwd(&x, xd)?;
    assert!(
        max_error(&d.download(&good)?, &want) < 1e-6,
        "the correct kernel passes"
    );
    let mut y = d.alloc(want.len())?;
    // SAFETY: x holds planes*h*w, y planes*(h-1)*(w-1), as shift_crop_fwd_f32's launch.
    unsafe {
        kernels::faulty_shift_crop_fwd_f32(
            d.drv(),
            cfg1d(want.len()),
            planes as i32,
            h as i32,
            w as i32,
            x.data.dev(),
            y.data.dev_mut(),
        )
    }?;
    let err = max_error(&d.download(&y)?, &want);
    assert!(err > 1e-2, "the wrong index must fail parity (error {err})");
    Ok(())
}

/// `dot` through a reduction launch (`dot_f32` or its racy twin) and the finish.
fn dot_with(d: &Cuda, a: &CudaBuf, b: &CudaBuf, faulty: bool) -> Result<f64> {
    let blocks = a.len.div_ceil(BLOCK as usize);
    let mut partials = d.scratch::<f64>(blocks)?;
    let mut out = d.scratch::<f64>(1)?;
    let cfg = super::driver::LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    let n = a.len as i32;
    let launch = if faulty {
        kernels::faulty_dot_f32
    } else {
        kernels::dot_f32
    };
    // SAFETY: a and b hold n elements, partials one double per block, out one.
    unsafe {
        launch(
            d.drv(),
            cfg,
            n,
            a.data.dev(),
            b.data.dev(),
            partials.dev_mut(),
        )
    }?;
    // SAFETY: partials holds `blocks` doubles, out one.
    unsafe {
        kernels::reduce_finish_f64(
            d.drv(),
            ONE_BLOCK,
            blocks as i32,
            partials.dev(),
            out.dev_mut(),
        )
    }?;
    let mut host = [0.0f64];
    out.download_into(&mut host)?;
    Ok(host[0])
}

#[test]
fn missing_syncthreads_fails_parity() -> Result<()> {
    let d = sim();
    let (ha, hb) = (random(N, 2), random(N, 3));
    let want: f64 = ha.iter().zip(&hb).map(|(x, y)| *x as f64 * *y as f64).sum();
    let (a, b) = (d.upload(&ha)?, d.upload(&hb)?);
    let good = dot_with(&d, &a, &b, false)?;
    assert!(
        (good - want).abs() <= 1e-9 * want.abs().max(1.0),
        "the correct kernel passes"
    );
    let bad = dot_with(&d, &a, &b, true)?;
    // NaN (the per-block shared memory is NaN until written) or a wrong sum: either way
    // not the right one.
    assert!(
        bad.is_nan() || (bad - want).abs() > 1e-3 * want.abs().max(1.0),
        "the race must change the sum: {bad} vs {want}"
    );
    Ok(())
}

#[test]
fn out_of_bounds_write_names_the_kernel() -> Result<()> {
    let d = sim();
    let mut y = d.alloc(N)?;
    // SAFETY (deliberately violated by the kernel, not by this call): y holds N elements.
    let err =
        unsafe { kernels::faulty_fill_f32(d.drv(), cfg1d(N), N as i32, 1.0, y.data.dev_mut()) }
            .expect_err("an out-of-bounds write must fail the launch");
    let msg = err.to_string();
    eprintln!("the simulation reports: {msg}");
    assert!(
        msg.contains("faulty_fill_f32"),
        "the error names the kernel: {msg}"
    );
    assert!(
        msg.contains("out-of-bounds"),
        "the error says what happened: {msg}"
    );
    // The device stays usable after the fault.
    let ok = d.fill(N, 2.0)?;
    assert!(d.download(&ok)?.iter().all(|&v| v == 2.0));
    Ok(())
}

#[test]
fn reading_unwritten_memory_shows_nan() -> Result<()> {
    let (d, cpu) = (sim(), Cpu::new());
    let (hy, hdy) = (random(N, 4), random(N, 5));
    let want = cpu.relu_bwd(&hy, &hdy)?;
    let (y, dy) = (d.upload(&hy)?, d.upload(&hdy)?);
    let good = d.relu_bwd(&y, &dy)?;
    assert!(
        max_error(&d.download(&good)?, &want) < 1e-6,
        "the correct kernel passes"
    );
    let mut dx = d.alloc(N)?;
    // SAFETY: y, dy and dx hold N elements.
    unsafe {
        kernels::faulty_relu_bwd_f32(
            d.drv(),
            cfg1d(N),
            N as i32,
            y.data.dev(),
            dy.data.dev(),
            dx.data.dev_mut(),
        )
    }?;
    let got = d.download(&dx)?;
    assert!(got.iter().all(|v| v.is_nan()), "fresh memory reads as NaN");
    let err = max_error(&got, &want);
    assert!(err.is_nan() || err >= 1e-4, "and parity fails ({err})");
    Ok(())
}
