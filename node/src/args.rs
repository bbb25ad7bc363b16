//! Command-line pieces every `roost` subcommand shares: the config arguments and the one-line
//! failure. A leaf: capabilities' `cli.rs` files import it, never `crate::cli`.

use std::{path::PathBuf, process::ExitCode};

use clap::Args;

use crate::config::{Config, ConfigError, ConfigFlags, Sources};

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// TOML config file; see roost.example.toml for every key.
    #[arg(long, short = 'c', env = "ROOST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: ConfigFlags,
}

impl ConfigArgs {
    /// Loads the config from the file, the process environment and the flags.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(&Sources::from_process(self.config.clone(), &self.overrides))
    }
}

/// Prints one line naming the problem and returns the exit code.
pub fn fail(code: u8, error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(code)
}
