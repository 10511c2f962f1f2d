#![doc = include_str!("../README.md")]
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![allow(
    rustdoc::broken_intra_doc_links,
    rustdoc::invalid_html_tags,
    reason = "the doc comments of the clap types are --help text, written for a terminal"
)]

mod client;
mod dates;
mod dlq;
mod exit;
mod send;
mod sign;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit::Exit;

/// The exit codes, shown at the end of every `--help`.
const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    failure: an event failed to replay or purge, the gateway refused the webhook,
       a broker or network error
  2    usage or configuration error (bad flag, FIREFLY_* variable, secret or file)
  3    verification failed (`verify`)
  4    not found (`dlq show`: no dead letter with that event id)
  130  interrupted (Ctrl-C): the summary shows what was done; press Ctrl-C twice to quit
       at once";

/// The operator's command line for firefly-webhook.
///
/// Inspect, replay and purge dead-lettered events on Kafka, RabbitMQ or the disk transport,
/// send a webhook signed as a provider signs it, and find out why a captured request fails
/// verification.
///
/// Broker settings default to the gateway's environment (FIREFLY_TRANSPORT,
/// FIREFLY_KAFKA_BROKERS, FIREFLY_AMQP_URL, FIREFLY_DATA_DIR, FIREFLY_DESTINATIONS, ...); flags
/// win.
#[derive(Debug, Parser)]
#[command(name = "firefly", version, after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
struct Cli {
    /// Print machine-readable JSON on stdout (progress and prompts still go to stderr).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect, replay and purge dead-lettered events.
    #[command(after_long_help = EXIT_CODES)]
    Dlq(dlq::DlqArgs),
    /// Send a webhook signed exactly as a provider signs it, and print the receipt.
    #[command(after_long_help = EXIT_CODES)]
    Send(send::SendArgs),
    /// Check a captured request's signature step by step, and say which step fails.
    #[command(after_long_help = EXIT_CODES)]
    Verify(verify::VerifyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("firefly: cannot start the runtime: {err}");
            return Exit::Failed.into();
        }
    };
    let json = cli.json;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dlq(args) => dlq::run(args, json).await,
            Command::Send(args) => send::run(args, json).await,
            Command::Verify(args) => verify::run(&args, json),
        }
    });
    // Kafka and RabbitMQ clients may hold background threads; don't wait for them.
    runtime.shutdown_background();
    match result {
        Ok(exit) => exit.into(),
        Err(fatal) => {
            eprintln!("firefly: {fatal}");
            fatal.exit().into()
        }
    }
}

/// For `Fatal`'s `Display`: an error and its sources, joined with ": ".
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        out.push_str(": ");
        out.push_str(&err.to_string());
        source = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_documents_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "130"] {
            assert!(
                help.contains(&format!("  {code}")),
                "{code} missing:\n{help}"
            );
        }
    }
}
