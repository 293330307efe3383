//! Builds the kernels for whichever CUDA driver is enabled and generates their Rust side:
//! - always (with `cuda` or `cuda-sim`): reads the interface of `kernels/*.cu` (integer
//!   defines, by-value structs, `extern "C" __global__` signatures; build/kernel_abi.rs) and
//!   writes `$OUT_DIR/kernels.rs`: the kernel table, one typed launcher per kernel and the
//!   `#[repr(C)]` twin of each struct with C's layout asserted on both sides. A kernel whose
//!   signature changes without its Rust caller changing no longer compiles.
//! - `cuda`: nvcc compiles each `.cu` to a fatbin (sm_80 and sm_90 machine code plus
//!   compute_80 PTX), embedded as `FATBINS`. nvcc comes from `NVCC`, else
//!   `$CUDA_HOME/bin/nvcc`, else `nvcc` on PATH; a missing nvcc is a hard error (a silent
//!   fallback once shipped a binary without kernels). ptxas's `-v` report goes to
//!   `$OUT_DIR/ptxas-report.txt`; any register spill fails the build.
//! - `cuda-sim`: the host C++ compiler builds the same `.cu` files against
//!   kernels/sim/cuda_sim.h, with one generated trampoline per kernel, into the simulation
//!   library (no nvcc needed). With `cuda` alone the host compiler still checks them
//!   (syntax only), so the struct layout asserts run in every CUDA build.
//! - whatever the features: the ONNX message types, `proto/onnx.proto` compiled by
//!   prost-build into `$OUT_DIR/onnx.rs` (build/onnx_proto.rs).
//!
//! Without either CUDA feature it does nothing else.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const NVCC_HELP: &str = "install nvcc 13.0 from PyPI and point NVCC at it:\n  \
python3 -m venv .cuda-venv && .cuda-venv/bin/pip install nvidia-cuda-nvcc==13.0.88 \"nvidia-cuda-runtime==13.0.*\" \
\"nvidia-cuda-crt==13.0.*\" \"nvidia-cuda-cccl==13.0.*\" \"nvidia-nvvm==13.0.*\"\n  \
export NVCC=$(.cuda-venv/bin/python -c 'import nvidia.cu13 as m; print(m.__path__[0])')/bin/nvcc";

#[path = "build/kernel_abi.rs"]
mod kernel_abi;
#[path = "build/onnx_proto.rs"]
mod onnx_proto;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // build/kernel_abi.rs and the files of build/kernel_abi/ (cargo watches a folder whole).
    println!("cargo:rerun-if-changed=build");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    onnx_proto::generate(&out_dir);
    let gpu = env::var_os("CARGO_FEATURE_CUDA").is_some();
    let sim = env::var_os("CARGO_FEATURE_CUDA_SIM").is_some();
    if !gpu && !sim {
        return;
    }
    println!("cargo:rerun-if-changed=kernels");

    let mut sources: Vec<PathBuf> = fs::read_dir("kernels")
        .unwrap_or_else(|e| panic!("cannot read kernels/: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();
    if sources.is_empty() {
        panic!("a CUDA feature is on but kernels/ holds no .cu files");
    }
    let stems: Vec<String> = sources.iter().map(|p| stem(p)).collect();

    // The interface: headers first (their structs and defines are used by every module).
    let mut abi = kernel_abi::Abi::default();
    let mut headers: Vec<PathBuf> = fs::read_dir("kernels")
        .unwrap_or_else(|e| panic!("cannot read kernels/: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cuh"))
        .collect();
    headers.sort();
    for h in &headers {
        println!("cargo:rerun-if-changed={}", h.display());
        abi.read(&h.display().to_string(), None, &read(h));
    }
    for (cu, stem) in sources.iter().zip(&stems) {
        println!("cargo:rerun-if-changed={}", cu.display());
        abi.read(&cu.display().to_string(), Some(stem), &read(cu));
    }
    // The simulation also builds the deliberately wrong kernels that prove it catches bugs
    // (module "faults"; never compiled for the GPU).
    let mut sim_sources = sources.clone();
    let mut sim_stems = stems.clone();
    if sim {
        let faults = PathBuf::from("kernels/sim/faults.cu");
        println!("cargo:rerun-if-changed={}", faults.display());
        abi.read(
            &faults.display().to_string(),
            Some("faults"),
            &read(&faults),
        );
        sim_sources.push(faults);
        sim_stems.push("faults".into());
    }

    if gpu {
        compile_fatbins(&sources, &out_dir);
    }
    // The host build of the kernels: the simulation itself with `cuda-sim`; with `cuda`
    // alone, a syntax-only pass that still checks the struct layouts with the host compiler.
    if env::var_os("NASRS_TMP_SKIP_CC").is_none() {
        compile_sim(&abi, &sim_sources, &sim_stems, &out_dir, sim);
    }
    let code = kernel_abi::rust_code(&abi, gpu.then_some(stems.as_slice()), sim);
    fs::write(out_dir.join("kernels.rs"), code).expect("write kernels.rs");
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .and_then(|s| s.to_str())
        .expect("kernel file names are UTF-8")
        .to_string()
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// The simulation runtime's units in kernels/sim/ (runtime.cpp says which owns what), linked
/// into the `nasrs_sim` library with the kernels; kernels/sim/selfcheck.sh builds the same list
/// (`runtime*.cpp`).
const SIM_RUNTIME: &[&str] = &[
    "runtime.cpp",
    "runtime_fault.cpp",
    "runtime_fiber.cpp",
    "runtime_memory.cpp",
    "runtime_sync.cpp",
];

/// The headers in kernels/sim/ the simulation build reads: the device language, the runtime's
/// C ABI and its internal headers.
const SIM_HEADERS: &[&str] = &[
    "cuda_sim.h",
    "cuda_bf16.h",
    "runtime.h",
    "runtime_internal.h",
    "runtime_fiber.h",
];

/// One C++ unit per module (`$OUT_DIR/sim/<stem>.cpp`, see `kernel_abi::sim_unit`) plus
/// the runtime's units ([`SIM_RUNTIME`]), compiled with the host compiler into the `nasrs_sim`
/// library.
/// No contraction (`-ffp-contract=off`, as nvcc's `-fmad=false`) and wrapping signed
/// arithmetic (`-fwrapv`, what the GPU's integer units do), so results match the GPU
/// build's arithmetic.
fn compile_sim(
    abi: &kernel_abi::Abi,
    sources: &[PathBuf],
    stems: &[String],
    out_dir: &Path,
    link: bool,
) {
    let sim_dir = Path::new("kernels/sim");
    for f in SIM_HEADERS.iter().chain(SIM_RUNTIME) {
        println!("cargo:rerun-if-changed=kernels/sim/{f}");
    }
    let gen_dir = out_dir.join("sim");
    fs::create_dir_all(&gen_dir).expect("create $OUT_DIR/sim");
    let mut units = Vec::new();
    for (cu, stem) in sources.iter().zip(stems) {
        let abs = fs::canonicalize(cu).unwrap_or_else(|e| panic!("{}: {e}", cu.display()));
        let unit = gen_dir.join(format!("{stem}.cpp"));
        fs::write(
            &unit,
            kernel_abi::sim_unit(abi, &abs.display().to_string(), stem),
        )
        .expect("write a simulation unit");
        units.push(unit);
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .debug(false)
        .warnings(false)
        .define("NASRS_CUDA_SIM", None)
        .include(sim_dir)
        .include("kernels")
        .flag("-ffp-contract=off")
        .flag("-fwrapv")
        .flag("-fno-strict-aliasing")
        .flag("-include")
        .flag(sim_dir.join("cuda_sim.h").display().to_string());
    if link {
        build
            .files(&units)
            .files(SIM_RUNTIME.iter().map(|f| sim_dir.join(f)));
        build.compile("nasrs_sim");
    } else {
        let compiler = build.get_compiler();
        for unit in &units {
            let out = compiler
                .to_command()
                .arg("-fsyntax-only")
                .arg(unit)
                .output()
                .unwrap_or_else(|e| panic!("failed to run the host C++ compiler: {e}"));
            if !out.status.success() {
                panic!(
                    "the host compile of {} failed (struct layouts or the simulation header):\n{}",
                    unit.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// nvcc: one fatbin per .cu, the ptxas report, and the spill gate.
fn compile_fatbins(sources: &[PathBuf], out_dir: &Path) {
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let nvcc = find_nvcc();
    let mut report = String::new();
    for cu in sources {
        let stem = stem(cu);
        let fatbin = out_dir.join(format!("{stem}.fatbin"));
        let out = Command::new(&nvcc)
            // -fmad=false: no contraction of a*b+c into FMA, so elementwise float math rounds
            // exactly like the CPU twin (Rust never contracts) and parity checks stay tight.
            .args([
                "-fatbin",
                "-O3",
                "-std=c++17",
                "-fmad=false",
                "-Xptxas",
                "-v",
            ])
            .args(["-gencode", "arch=compute_80,code=sm_80"])
            .args(["-gencode", "arch=compute_90,code=sm_90"])
            .args(["-gencode", "arch=compute_80,code=compute_80"])
            .args(["-Ikernels", "-o"])
            .arg(&fatbin)
            .arg(cu)
            .output()
            .unwrap_or_else(|e| {
                panic!("failed to run nvcc ({}): {e}\n{NVCC_HELP}", nvcc.display())
            });
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            panic!("nvcc failed on {}:\n{stderr}", cu.display());
        }
        let _ = writeln!(report, "==== {} ====\n{stderr}", cu.display());
    }

    let kernels = parse_ptxas(&report);
    let mut summary = String::from(
        "kernel                                   arch    regs  stack  spill-st  spill-ld\n",
    );
    for k in &kernels {
        let _ = writeln!(
            summary,
            "{:<40} {:<7} {:>4} {:>6} {:>9} {:>9}",
            k.name, k.arch, k.regs, k.stack, k.spill_stores, k.spill_loads
        );
    }
    let path = out_dir.join("ptxas-report.txt");
    fs::write(&path, format!("{summary}\n{report}")).expect("write ptxas-report.txt");

    let spills: Vec<&Kernel> = kernels
        .iter()
        .filter(|k| k.spill_stores > 0 || k.spill_loads > 0)
        .collect();
    if !spills.is_empty() {
        let names: Vec<String> = spills
            .iter()
            .map(|k| format!("{} ({})", k.name, k.arch))
            .collect();
        println!("cargo:warning=ptxas report: {}", path.display());
        panic!(
            "register spills in {}; see {}",
            names.join(", "),
            path.display()
        );
    }
    if kernels.is_empty() {
        println!(
            "cargo:warning=ptxas reported no kernels; see {}",
            path.display()
        );
    }
    for k in kernels.iter().filter(|k| k.stack > 0) {
        println!(
            "cargo:warning={} ({}) uses a {}-byte stack frame; see {}",
            k.name,
            k.arch,
            k.stack,
            path.display()
        );
    }
}

fn find_nvcc() -> PathBuf {
    if let Some(p) = env::var_os("NVCC") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            panic!("NVCC={} does not exist.\n{NVCC_HELP}", p.display());
        }
        return p;
    }
    if let Some(home) = env::var_os("CUDA_HOME") {
        let p = Path::new(&home).join("bin/nvcc");
        if p.is_file() {
            return p;
        }
    }
    let on_path = Command::new("nvcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return PathBuf::from("nvcc");
    }
    panic!("the `cuda` feature needs nvcc, and none was found (NVCC, $CUDA_HOME/bin/nvcc, PATH).\n{NVCC_HELP}");
}

/// One kernel's figures for one architecture, from `ptxas -v`.
struct Kernel {
    name: String,
    arch: String,
    regs: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// Reads "Compiling entry function 'f' for 'sm_90'", "N bytes stack frame, S bytes spill
/// stores, L bytes spill loads" and "Used R registers" lines, in that order.
fn parse_ptxas(report: &str) -> Vec<Kernel> {
    let mut out: Vec<Kernel> = Vec::new();
    let num_before = |line: &str, key: &str| -> u32 {
        line.find(key)
            .and_then(|i| line[..i].split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let mut parts = rest.split('\'');
            let name = parts.next().unwrap_or("").to_string();
            let arch = parts.nth(1).unwrap_or("").to_string();
            out.push(Kernel {
                name,
                arch,
                regs: 0,
                stack: 0,
                spill_stores: 0,
                spill_loads: 0,
            });
        } else if let Some(k) = out.last_mut() {
            if line.contains("spill stores") {
                k.stack = num_before(line, "bytes stack frame");
                k.spill_stores = num_before(line, "bytes spill stores");
                k.spill_loads = num_before(line, "bytes spill loads");
            } else if line.contains("Used") && line.contains("registers") {
                k.regs = num_before(line, "registers");
            }
        }
    }
    out
}
