//! DARTS search (first and second order): filled in next.
