//! DNS discovery (EIP-1459): [`tree`] owns the record formats, building and signing a tree and
//! verifying one as it is resolved; the node's resolver task lives beside it.

pub mod tree;

pub use tree::{Synced, Tree, TreeError, TreeUrl, UnsignedTree};
