//! Roost fleets: definitions (`staging.toml`, `beta.toml`), rendering them into node configs and
//! Ansible inventories, running a whole fleet locally, and checking, auditing and comparing
//! fleets.

pub mod audit;
pub mod check;
pub mod compare;
pub mod dns;
pub mod local;
pub mod model;
pub mod render;

pub use model::{Fleet, FleetError, Host, Role};
