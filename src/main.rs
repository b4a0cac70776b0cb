//! `espgate`: a site-to-site IPsec VPN gateway.
//!
//! * `espgate run -c gateway.toml` runs one gateway.
//! * `espgate show ike-sa|ipsec-sa|access-list [--json]` asks a running
//!   gateway over its control socket.
//! * `espgate check -c gateway.toml` validates a config and prints what
//!   would run.
//! * `espgate demo` replays the two-site scenario in one process.

// Parts of these (CtlServer, the view structs, Config accessors) are used
// by the gateway wiring of `run` and `demo`, which lands separately.
#[allow(dead_code)]
mod config;
#[allow(dead_code)]
mod ctl;
#[allow(dead_code)]
mod demo;
mod gateway;
mod keylog;
mod run;
#[allow(dead_code)]
mod show;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::show::ShowWhat;

#[derive(Parser, Debug)]
#[command(
    name = "espgate",
    version,
    about = "Site-to-site IPsec VPN gateway (ESP dataplane + IKEv2)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one gateway from its configuration file.
    Run {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show the state of a running gateway (Cisco-like).
    Show {
        what: What,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Control socket of the gateway (default: from --config, else the
        /// only espgate socket found).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Take the control socket path from this configuration.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration and print what it would run.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Two gateways and two hosts in one process, replaying the two-site scenario.
    Demo,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum What {
    /// `show crypto ikev2 sa`
    IkeSa,
    /// `show crypto ipsec sa`
    IpsecSa,
    /// `show access-list`
    AccessList,
}

impl From<What> for ShowWhat {
    fn from(w: What) -> ShowWhat {
        match w {
            What::IkeSa => ShowWhat::IkeSa,
            What::IpsecSa => ShowWhat::IpsecSa,
            What::AccessList => ShowWhat::AccessList,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("espgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            run::run(cfg)
        }
        Command::Check { config } => {
            let cfg = Config::load(&config)?;
            print!("{}", cfg.summary());
            println!("config OK");
            Ok(())
        }
        Command::Show {
            what,
            json,
            socket,
            config,
        } => {
            let path = match (socket, config) {
                (Some(s), _) => s,
                (None, Some(c)) => Config::load(&c)?.control_socket(),
                (None, None) => find_socket()?,
            };
            let what = ShowWhat::from(what);
            let line = if json {
                format!("{} json", what.command())
            } else {
                what.command().to_string()
            };
            let answer = ctl::request(&path, &line)?;
            print!("{answer}");
            if answer.starts_with("error:") {
                bail!("the gateway refused `{line}`");
            }
            Ok(())
        }
        Command::Demo => {
            if demo::run()? {
                Ok(())
            } else {
                bail!("demo checks failed")
            }
        }
    }
}

/// The control socket when none was named: the only `*.sock` in
/// /run/espgate, or the only `espgate-*.sock` in $TMPDIR.
fn find_socket() -> anyhow::Result<PathBuf> {
    let mut found = Vec::new();
    let dirs: [(PathBuf, &str); 2] = [
        (PathBuf::from("/run/espgate"), ""),
        (std::env::temp_dir(), "espgate-"),
    ];
    for (dir, prefix) in &dirs {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) && name.ends_with(".sock") {
                found.push(e.path());
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("no running gateway found (no control socket in /run/espgate or {}); pass --socket PATH or -c FILE", std::env::temp_dir().display()),
        _ => bail!(
            "several gateways are running ({}); pass --socket PATH or -c FILE",
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["espgate", "show", "ipsec-sa", "--json", "--socket", "/x"])
            .unwrap();
        assert!(matches!(
            c.command,
            Command::Show {
                what: What::IpsecSa,
                json: true,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["espgate", "show", "bogus"]).is_err());
        assert!(
            Cli::try_parse_from(["espgate", "run"]).is_err(),
            "-c is required"
        );
    }
}
