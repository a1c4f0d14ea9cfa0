//! `capstan proxy-init`: Istio's `istio-iptables` (the injected `istio-init` container) for the
//! pod's network namespace. The rules come from `capstan_inject::capture` (pure); this file
//! parses the flags and applies them with one `iptables-restore --noflush`, which replaces a
//! previous install atomically (running it twice leaves one copy of every rule).

use anyhow::{Context as _, Result};
use capstan_inject::capture::{self, CaptureOptions};
use std::io::Write as _;
use std::process::{Command, Stdio};

/// Flags of `capstan proxy-init`: `istio-iptables`' short forms (as the injection template
/// passes them) and long names. Defaults are those of Istio's injected sidecar.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Port outbound TCP is redirected to (`virtualOutbound`).
    #[arg(short = 'p', long = "envoy-port", default_value_t = 15001)]
    proxy_port: u16,
    /// Port inbound TCP is redirected to (`virtualInbound`).
    #[arg(short = 'z', long = "inbound-capture-port", default_value_t = 15006)]
    inbound_port: u16,
    /// The proxy's UIDs (comma-separated); their traffic is never captured.
    #[arg(short = 'u', long = "proxy-uid", default_value = "1337")]
    proxy_uid: String,
    /// The proxy's GIDs; default: the same as the UIDs.
    #[arg(short = 'g', long = "proxy-gid")]
    proxy_gid: Option<String>,
    /// Interception mode; only REDIRECT is supported.
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        default_value = "REDIRECT"
    )]
    mode: String,
    /// Outbound destinations captured: `*` or CIDRs (empty: none).
    #[arg(short = 'i', long = "istio-service-cidr", default_value = "*")]
    include_outbound_ranges: String,
    /// Outbound destinations never captured (CIDRs).
    #[arg(short = 'x', long = "istio-service-exclude-cidr", default_value = "")]
    exclude_outbound_ranges: String,
    /// Inbound ports captured: `*` or ports (empty: no inbound capture).
    #[arg(short = 'b', long = "istio-inbound-ports", default_value = "*")]
    include_inbound_ports: String,
    /// Inbound ports never captured, with `-b '*'`.
    #[arg(
        short = 'd',
        long = "istio-local-exclude-ports",
        default_value = "15090,15021,15020"
    )]
    exclude_inbound_ports: String,
    /// Outbound ports never captured.
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        default_value = ""
    )]
    exclude_outbound_ports: String,
    /// Outbound ports always captured, whatever the destination.
    #[arg(short = 'q', long = "istio-include-outbound-ports", default_value = "")]
    include_outbound_ports: String,
    /// Print the `iptables-restore` input instead of applying it.
    #[arg(long)]
    dry_run: bool,
}

impl Args {
    /// The capture these flags describe.
    fn options(&self) -> Result<CaptureOptions, capture::CaptureError> {
        capture::check_mode(&self.mode)?;
        let proxy_uids = capture::parse_ids("-u", &self.proxy_uid)?;
        let proxy_gids = match &self.proxy_gid {
            Some(g) => capture::parse_ids("-g", g)?,
            None => proxy_uids.clone(),
        };
        Ok(CaptureOptions {
            proxy_port: self.proxy_port,
            inbound_port: self.inbound_port,
            proxy_uids,
            proxy_gids,
            include_outbound_ranges: capture::parse_cidr_selection(
                "-i",
                &self.include_outbound_ranges,
            )?,
            exclude_outbound_ranges: capture::parse_cidrs("-x", &self.exclude_outbound_ranges)?,
            include_inbound_ports: capture::parse_port_selection(
                "-b",
                &self.include_inbound_ports,
            )?,
            exclude_inbound_ports: capture::parse_ports("-d", &self.exclude_inbound_ports)?,
            exclude_outbound_ports: capture::parse_ports("-o", &self.exclude_outbound_ports)?,
            include_outbound_ports: capture::parse_ports("-q", &self.include_outbound_ports)?,
        })
    }
}

fn iptables_save_nat() -> Result<String> {
    let out = Command::new("iptables-save")
        .args(["-t", "nat"])
        .stdin(Stdio::null())
        .output()
        .context("running iptables-save (is iptables installed?)")?;
    anyhow::ensure!(
        out.status.success(),
        "iptables-save -t nat failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn iptables_restore(input: &str) -> Result<()> {
    // -w: wait (bounded) for the xtables lock another tool may hold.
    let mut child = Command::new("iptables-restore")
        .args(["--noflush", "-w", "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running iptables-restore (is iptables installed?)")?;
    child
        .stdin
        .take()
        .context("iptables-restore stdin")?
        .write_all(input.as_bytes())
        .context("writing to iptables-restore")?;
    let out = child
        .wait_with_output()
        .context("waiting for iptables-restore")?;
    anyhow::ensure!(
        out.status.success(),
        "iptables-restore failed: {}\ninput:\n{input}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Installs (or with `--dry-run` prints) the capture rules.
pub fn run(args: &Args) -> Result<()> {
    let options = args.options()?;
    if args.dry_run {
        print!("{}", options.restore_input(""));
        return Ok(());
    }
    let current = iptables_save_nat()?;
    let input = options.restore_input(&current);
    iptables_restore(&input)?;
    eprintln!(
        "capstan proxy-init: installed {} nat rules (outbound → {}, inbound → {}, UIDs {:?} excluded)",
        options.rules().len(),
        options.proxy_port,
        options.inbound_port,
        options.proxy_uids
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Args;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("proxy-init").chain(argv.iter().copied()))
            .map(|c| c.args)
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
    }

    #[test]
    fn istio_short_forms_and_the_template_args_parse_to_the_same_capture() {
        let short = parse(&[
            "-p",
            "15001",
            "-z",
            "15006",
            "-u",
            "1337",
            "-m",
            "REDIRECT",
            "-i",
            "*",
            "-x",
            "",
            "-b",
            "*",
            "-d",
            "15090,15021,15020",
        ]);
        let long = parse(&[
            "--envoy-port",
            "15001",
            "--proxy-uid",
            "1337",
            "--istio-service-cidr",
            "*",
        ]);
        let defaults = capstan_inject::CaptureOptions::default();
        assert_eq!(short.options().expect("valid"), defaults);
        assert_eq!(long.options().expect("valid"), defaults);
        // What the injector writes into istio-init parses back to the same options.
        let injected = capstan_inject::CaptureOptions {
            exclude_outbound_ports: vec![3306],
            include_outbound_ports: vec![443],
            include_inbound_ports: capstan_inject::capture::Selection::Only(vec![9080]),
            ..defaults
        };
        let argv = injected.to_args();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        assert_eq!(parse(&argv).options().expect("valid"), injected);
    }

    #[test]
    fn invalid_flags_are_refused() {
        for (argv, needle) in [
            (&["-m", "TPROXY"][..], "TPROXY"),
            (&["-u", "root"][..], "-u"),
            (&["-i", "10.0.0.0/99"][..], "-i"),
            (&["-d", "http"][..], "-d"),
        ] {
            let err = parse(argv).options().expect_err("invalid");
            assert!(err.to_string().contains(needle), "{argv:?}: {err}");
        }
    }
}
