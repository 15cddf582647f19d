//! `p2ps network-key`: makes the secret of a private network (see `--network-key` of
//! `p2ps node`) and shows the public name of one.

use anyhow::{Context, Result};
use p2ps_transport::NetworkKey;
use std::path::PathBuf;

/// What `p2ps network-key` does.
#[derive(Debug, clap::Subcommand)]
pub enum NetworkKeyCommand {
    /// Make a new random network key in FILE (mode 0600; an existing file is never
    /// replaced). Give the file to every node of the network, over a channel you trust.
    New {
        /// Where to write the key.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the public name of the network whose key is in FILE (the name tickets carry).
    Name {
        /// The key file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Runs `p2ps network-key`.
pub fn run(cmd: NetworkKeyCommand) -> Result<()> {
    match cmd {
        NetworkKeyCommand::New { file } => {
            let key = NetworkKey::create(&file)
                .with_context(|| format!("making a network key in {}", file.display()))?;
            println!(
                "network key written to {} (mode 0600)\nnetwork: {}\nstart every node of the \
                 network with --network-key {}",
                file.display(),
                key.name(),
                file.display()
            );
        }
        NetworkKeyCommand::Name { file } => {
            let key = NetworkKey::load(&file)
                .with_context(|| format!("reading the network key {}", file.display()))?;
            println!("{}", key.name());
        }
    }
    Ok(())
}
