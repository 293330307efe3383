//! What the `tests/data_*.rs` files share.

/// The message of the error `r` must be (panics on Ok).
pub fn err_text<T>(r: nasrs::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}
