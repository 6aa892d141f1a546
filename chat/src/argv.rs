//! A kubectl command line, parsed with kubectl's own grammar.
//!
//! (Being written.)
