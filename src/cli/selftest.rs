//! `nasrs selftest`: every kernel of a device against the CPU backend.

use super::open_device;
use nasrs::Result;

pub(crate) fn selftest(device: &str, seed: u64) -> Result<()> {
    let dev = open_device(device)?;
    eprintln!("selftest on {} against the CPU backend", dev.name());
    let rows = with_backend!(dev, |be| nasrs::backend::selftest::run_parity(&be, seed)?);
    nasrs::backend::selftest::print_table(&rows);
    nasrs::backend::selftest::all_passed(&rows)
}
