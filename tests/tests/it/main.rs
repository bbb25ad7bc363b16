//! One integration-test binary for the whole node: each module is a capability.

mod cli;
mod relay;
mod throttle;
