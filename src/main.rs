//! The `nasrs` binary: the allocator settings, then the command line (`cli`).

mod cli;

use clap::Parser;
use std::process::ExitCode;

// mimalloc's `mi_option_set`; option 15 is `mi_option_purge_delay` in its v2 and v3 headers.
extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// mimalloc keeps freed activation buffers for reuse, where glibc returns big blocks to the
/// OS and every new one costs a page fault per 4 KiB (measured: most of `mixed_op_bwd`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Keep freed memory instead of handing it back to the OS after 10 ms: every step frees
    // and re-allocates gigabytes of activations, and fresh pages cost a fault and a zeroing
    // each (measured: 28% of a C=16 L=8 batch-64 CPU step in the kernel's clear_page).
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    match cli::run(cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            cli::exit_code(&e)
        }
    }
}
