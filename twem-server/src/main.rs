//! `twemproxy`: a drop-in for nutcracker. All logic lives in the library.
fn main() {}
