//! One integration-test binary for the whole node: each module is a capability.

mod cli;
mod operator;
mod relay;
