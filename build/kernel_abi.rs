//! The kernel ABI as build.rs reads it from `kernels/*.cu`: integer `#define`s, the structs
//! passed by value, and every `extern "C" __global__` signature; and the code generated
//! from it: the typed Rust launchers with their `#[repr(C)]` struct twins (`kernels.rs`)
//! and, for the `cuda-sim` build, one C++ trampoline per kernel that unpacks the driver's
//! `kernelParams` array and runs the kernel through the host simulation.
//!
//! The parser knows exactly the C subset the kernels use for their interface (scalar
//! types, pointers, fixed arrays whose sizes are integer expressions of `#define`s) and
//! panics with the file and declaration on anything else, so an unsupported signature is
//! a build error, not a silently wrong launcher.
//!
//! This file owns the ABI's types (C scalars, parameters, structs and their C layout, the
//! whole [`Abi`]) and how each is spelled in Rust and in C; `kernel_abi/parse.rs` reads
//! them from the sources, `kernel_abi/gen_rust.rs` writes `kernels.rs` and
//! `kernel_abi/gen_sim.rs` writes the simulation's C++ units.

#[path = "kernel_abi/gen_rust.rs"]
mod gen_rust;
#[path = "kernel_abi/gen_sim.rs"]
mod gen_sim;
#[path = "kernel_abi/parse.rs"]
mod parse;

pub use gen_rust::rust_code;
pub use gen_sim::sim_unit;

use std::collections::BTreeMap;

/// A scalar C type the interface uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scalar {
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
    Bf16,
}

impl Scalar {
    fn parse(words: &[&str]) -> Option<Scalar> {
        Some(match words {
            ["int"] | ["signed"] | ["signed", "int"] => Scalar::I32,
            ["unsigned"] | ["unsigned", "int"] => Scalar::U32,
            ["long", "long"] | ["long", "long", "int"] => Scalar::I64,
            ["unsigned", "long", "long"] | ["size_t"] | ["uint64_t"] => Scalar::U64,
            ["float"] => Scalar::F32,
            ["double"] => Scalar::F64,
            ["__nv_bfloat16"] => Scalar::Bf16,
            _ => return None,
        })
    }
    fn rust(self) -> &'static str {
        match self {
            Scalar::I32 => "i32",
            Scalar::U32 => "u32",
            Scalar::I64 => "i64",
            Scalar::U64 => "u64",
            Scalar::F32 => "f32",
            Scalar::F64 => "f64",
            Scalar::Bf16 => "half::bf16",
        }
    }
    fn c(self) -> &'static str {
        match self {
            Scalar::I32 => "int",
            Scalar::U32 => "unsigned",
            Scalar::I64 => "long long",
            Scalar::U64 => "unsigned long long",
            Scalar::F32 => "float",
            Scalar::F64 => "double",
            Scalar::Bf16 => "__nv_bfloat16",
        }
    }
    fn size(self) -> usize {
        match self {
            Scalar::Bf16 => 2,
            Scalar::I32 | Scalar::U32 | Scalar::F32 => 4,
            Scalar::I64 | Scalar::U64 | Scalar::F64 => 8,
        }
    }
}

/// A kernel parameter's type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamType {
    Value(Scalar),
    /// `const T*`
    ConstPtr(Scalar),
    /// `T*`
    MutPtr(Scalar),
    /// A struct by value (`__grid_constant__` or not).
    Struct(String),
}

#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
}

#[derive(Clone, Debug)]
pub struct KernelSig {
    pub name: String,
    /// The `.cu` file stem (the CUDA module), e.g. "elementwise".
    pub module: String,
    pub params: Vec<Param>,
    /// The signature as written (whitespace collapsed), for the launcher's doc comment.
    pub text: String,
}

/// A struct field: a scalar or a device pointer (an address), possibly a fixed array.
#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    /// None: a pointer (8 bytes).
    pub scalar: Option<Scalar>,
    pub count: Option<usize>,
}

impl Field {
    fn elem_size(&self) -> usize {
        self.scalar.map_or(8, Scalar::size)
    }
}

#[derive(Clone, Debug)]
pub struct StructDef {
    pub name: String,
    pub file: String,
    pub fields: Vec<Field>,
}

impl StructDef {
    /// C's layout on every target we build for (natural alignment): (size, field offsets).
    pub fn layout(&self) -> (usize, Vec<usize>) {
        let mut off = 0usize;
        let mut align = 1usize;
        let mut offsets = Vec::new();
        for f in &self.fields {
            let a = f.elem_size();
            align = align.max(a);
            off = off.div_ceil(a) * a;
            offsets.push(off);
            off += a * f.count.unwrap_or(1);
        }
        (off.div_ceil(align) * align, offsets)
    }
}

/// Everything read from kernels/.
#[derive(Default, Debug)]
pub struct Abi {
    pub defines: BTreeMap<String, i64>,
    pub structs: Vec<StructDef>,
    pub kernels: Vec<KernelSig>,
}

impl ParamType {
    fn rust(&self) -> String {
        match self {
            ParamType::Value(s) => s.rust().to_string(),
            ParamType::ConstPtr(s) => format!("Dev<'_, {}>", s.rust()),
            ParamType::MutPtr(s) => format!("DevMut<'_, {}>", s.rust()),
            ParamType::Struct(n) => n.clone(),
        }
    }
    /// The C type a trampoline reads the argument value as.
    fn c(&self) -> String {
        match self {
            ParamType::Value(s) => s.c().to_string(),
            ParamType::ConstPtr(s) => format!("const {}*", s.c()),
            ParamType::MutPtr(s) => format!("{}*", s.c()),
            ParamType::Struct(n) => n.clone(),
        }
    }
}
