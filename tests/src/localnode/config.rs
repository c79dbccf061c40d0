//! Command line of the `localnode` binary and the pure parsers behind it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Error, Result};

/// A node agent and Service proxy for a local Kubernetes control plane.
///
/// Every flag can also be given through the environment variable named beside it.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "localnode", version)]
pub struct Config {
    /// Name of the Node this agent registers and runs pods for.
    #[arg(long, env = "LOCALNODE_NODE_NAME", default_value = "modelship-local")]
    pub node_name: String,

    /// Address of the agent's HTTP server (`/healthz`, `/pods/{ns}/{name}/proxy/...`). Loopback only.
    #[arg(long, env = "LOCALNODE_AGENT_LISTEN", default_value = "127.0.0.1:0", value_parser = parse_loopback)]
    pub agent_listen: SocketAddr,

    /// Address of the Service proxy. Loopback only.
    #[arg(long, env = "LOCALNODE_PROXY_LISTEN", default_value = "127.0.0.1:0", value_parser = parse_loopback)]
    pub proxy_listen: SocketAddr,

    /// `PATTERN=BINARY`: a container whose image repository ends with PATTERN runs BINARY as a
    /// local process. Repeatable; in the environment, comma separated.
    #[arg(long = "run-image", env = "LOCALNODE_RUN_IMAGE", value_delimiter = ',', value_parser = RunImage::parse)]
    pub run_images: Vec<RunImage>,

    /// How long a fake pod waits before it is reported Running and Ready (e.g. `300ms`, `2s`).
    #[arg(long, env = "LOCALNODE_FAKE_READY_DELAY", default_value = "300ms", value_parser = parse_duration)]
    pub fake_ready_delay: Duration,

    /// How long the proxy waits before a Service or EndpointSlice change takes effect, to imitate
    /// kube-proxy lag.
    #[arg(long, env = "LOCALNODE_PROPAGATION_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub propagation_delay: Duration,

    /// After startup, write `{"agent":"127.0.0.1:P","proxy":"127.0.0.1:Q"}` here.
    #[arg(long, env = "LOCALNODE_STATE_FILE")]
    pub state_file: Option<PathBuf>,

    /// Directory for the logs and working directories of process pods (default: a new directory
    /// under the system temp dir).
    #[arg(long, env = "LOCALNODE_LOG_DIR")]
    pub log_dir: Option<PathBuf>,

    /// How many fake-pod status patches and deletions may be in flight at once.
    #[arg(long, env = "LOCALNODE_PATCH_CONCURRENCY", default_value_t = 32)]
    pub patch_concurrency: usize,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "LOCALNODE_LOG_JSON")]
    pub log_json: bool,
}

/// One `--run-image PATTERN=BINARY` mapping.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunImage {
    pub pattern: String,
    pub binary: PathBuf,
}

impl RunImage {
    /// Parses `PATTERN=BINARY`; slashes around the pattern are ignored.
    pub fn parse(value: &str) -> Result<RunImage> {
        let invalid =
            |reason| Error::Invalid { what: "--run-image", value: value.to_string(), reason };
        let (pattern, binary) =
            value.split_once('=').ok_or_else(|| invalid("expected PATTERN=BINARY"))?;
        let pattern = pattern.trim().trim_matches('/');
        let binary = binary.trim();
        if pattern.is_empty() || binary.is_empty() {
            return Err(invalid("PATTERN and BINARY must not be empty"));
        }
        Ok(RunImage { pattern: pattern.to_string(), binary: PathBuf::from(binary) })
    }
}

/// The binary of the first mapping whose pattern matches `image`.
pub fn binary_for<'a>(run_images: &'a [RunImage], image: &str) -> Option<&'a Path> {
    run_images.iter().find(|run| image_matches(image, &run.pattern)).map(|run| run.binary.as_path())
}

/// The repository path of an image reference: digest and tag removed, registry kept.
pub fn image_repository(image: &str) -> &str {
    let name = image.split_once('@').map_or(image, |(name, _)| name);
    // A tag is a ':' after the last '/'; an earlier ':' is a registry port (host:5000/x).
    match name.rfind(':') {
        Some(colon) if !name[colon..].contains('/') => &name[..colon],
        _ => name,
    }
}

/// Whether the repository of `image` ends with `pattern` at a path-segment boundary, so that
/// `modelship/echo` matches `ghcr.io/modelship/echo:1` but not `x/notmodelship/echo`.
pub fn image_matches(image: &str, pattern: &str) -> bool {
    let repository = image_repository(image);
    match repository.strip_suffix(pattern) {
        Some("") => true,
        Some(prefix) => prefix.ends_with('/'),
        None => false,
    }
}

/// Parses `0`, `250ms`, `2s`, `1.5s` or `1m`.
pub fn parse_duration(value: &str) -> Result<Duration> {
    let invalid = |reason| Error::Invalid { what: "duration", value: value.to_string(), reason };
    let text = value.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 =
        number.parse().map_err(|_| invalid("expected a number followed by ms, s or m"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "" if number == 0.0 => 0.0,
        _ => return Err(invalid("expected a number followed by ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| invalid("out of range"))
}

/// Parses a listen address and refuses anything but loopback: localnode never listens on a
/// network interface.
pub fn parse_loopback(value: &str) -> Result<SocketAddr> {
    let addr: SocketAddr = value.parse().map_err(|_| Error::Invalid {
        what: "listen address",
        value: value.to_string(),
        reason: "expected IP:PORT",
    })?;
    if !addr.ip().is_loopback() {
        return Err(Error::Invalid {
            what: "listen address",
            value: value.to_string(),
            reason: "must be a loopback address",
        });
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_drops_tag_and_digest_but_keeps_registry_port() {
        assert_eq!(image_repository("modelship/echo"), "modelship/echo");
        assert_eq!(image_repository("modelship/echo:1.2"), "modelship/echo");
        assert_eq!(
            image_repository("reg:5000/modelship/echo@sha256:abc"),
            "reg:5000/modelship/echo"
        );
        assert_eq!(
            image_repository("reg:5000/modelship/echo:v1@sha256:abc"),
            "reg:5000/modelship/echo"
        );
        assert_eq!(image_repository("reg:5000/echo"), "reg:5000/echo");
    }

    #[test]
    fn image_matches_at_segment_boundaries_only() {
        assert!(image_matches("ghcr.io/modelship/echo:1", "modelship/echo"));
        assert!(image_matches("modelship/echo", "modelship/echo"));
        assert!(image_matches("modelship/echo@sha256:00", "echo"));
        assert!(!image_matches("x/notmodelship/echo:1", "modelship/echo"));
        assert!(!image_matches("modelship/echo-server:1", "modelship/echo"));
        assert!(!image_matches("modelship/serving:echo", "echo"));
    }

    #[test]
    fn first_matching_run_image_wins() {
        let runs = vec![
            RunImage::parse("modelship/serving=/bin/serve").unwrap(),
            RunImage::parse("serving=/bin/other").unwrap(),
        ];
        assert_eq!(binary_for(&runs, "r.io/modelship/serving:2"), Some(Path::new("/bin/serve")));
        assert_eq!(binary_for(&runs, "r.io/x/serving:2"), Some(Path::new("/bin/other")));
        assert_eq!(binary_for(&runs, "r.io/x/app:2"), None);
    }

    #[test]
    fn run_image_needs_both_sides() {
        assert_eq!(
            RunImage::parse("/modelship/echo/=/bin/echo").unwrap().pattern,
            "modelship/echo"
        );
        assert!(RunImage::parse("modelship/echo").is_err());
        assert!(RunImage::parse("=/bin/echo").is_err());
        assert!(RunImage::parse("echo=").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        for bad in ["", "5", "s", "-1s", "2h", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn listen_addresses_must_be_loopback() {
        assert!(parse_loopback("127.0.0.1:0").is_ok());
        assert!(parse_loopback("[::1]:8080").is_ok());
        assert!(parse_loopback("0.0.0.0:8080").is_err());
        assert!(parse_loopback("192.0.2.1:80").is_err());
        assert!(parse_loopback("localhost:80").is_err());
    }
}
