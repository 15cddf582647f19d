//! What `p2ps node` runs with: flags over environment over the `--config` file over defaults.
//!
//! Everything is merged and checked here, before the node touches anything (control socket,
//! key file, network), so that a bad setting costs nothing but an error message.

use super::args::{parse_lookup_mode, parse_strategy, resolve_listen, NodeArgs};
use super::config_file::FileConfig;
use super::limits::LimitArgs;
use crate::control::socket::{check_name, control_path};
use anyhow::{bail, Context, Result};
use p2ps::{Identity, NodeConfig};
use p2ps_transport::NetworkKey;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The dictionary's file in the node's data directory.
pub(super) const DICT_FILE: &str = "dict.redb";

/// Where default files go, read from the environment once.
#[derive(Debug, Clone, Default)]
pub(super) struct Dirs {
    data_home: Option<PathBuf>,
    home: Option<PathBuf>,
}

impl Dirs {
    /// `XDG_DATA_HOME` and `HOME`, each only if it is an absolute path.
    pub(super) fn from_env() -> Dirs {
        let abs = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
        Dirs {
            data_home: abs(std::env::var_os("XDG_DATA_HOME")),
            home: abs(std::env::var_os("HOME")),
        }
    }

    /// The directory of default key files.
    fn key_dir(&self) -> Result<PathBuf> {
        match (&self.data_home, &self.home) {
            (Some(d), _) => Ok(d.join("p2ps")),
            (None, Some(h)) => Ok(h.join(".local/share/p2ps")),
            (None, None) => {
                bail!("neither XDG_DATA_HOME nor HOME is set: give the key file with --key")
            }
        }
    }
}

/// Everything `p2ps node` runs with, once flags, environment, file and defaults are merged.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) key: PathBuf,
    pub(super) key_is_default: bool,
    pub(super) control: PathBuf,
    pub(super) control_is_default: bool,
    pub(super) ticket_file: Option<PathBuf>,
    /// Where the node keeps its data; `None`: in memory only.
    pub(super) data_dir: Option<PathBuf>,
    pub(super) config: NodeConfigParts,
    pub(super) json: bool,
    /// The HTTP interface, if asked for.
    pub(super) http: Option<super::http::HttpSettings>,
}

/// The parts of a [`NodeConfig`] other than the identity.
#[derive(Debug, Clone)]
pub(super) struct NodeConfigParts {
    pub(super) listen: SocketAddr,
    advertise: Vec<SocketAddr>,
    overlay: p2ps_overlay::Config,
    groups: p2ps_overlay::groups::GroupConfig,
    idle_timeout: Option<Duration>,
    protocol_version: Option<u32>,
    upnp: bool,
    relay_serve: bool,
    limits: LimitArgs,
    /// The dictionary's file; `None`: in memory.
    dict_path: Option<PathBuf>,
    /// The dictionary's settings (its quotas and largest value).
    dict: p2ps::dict::DictConfig,
    /// The private network's key, read from its file; `None`: an open network.
    pub(super) network_key: Option<NetworkKey>,
}

impl NodeConfigParts {
    /// The node's configuration: these parts, the identity, and the message size limit that
    /// the control socket is built for.
    pub(super) fn node_config(&self, identity: Identity) -> NodeConfig {
        let mut cfg = NodeConfig::new(identity, self.listen);
        // The limit the clients check, and the one the control socket's request size allows for.
        cfg.max_message_size = crate::payload::MAX_PAYLOAD_BYTES;
        cfg.advertise = self.advertise.clone();
        cfg.overlay = self.overlay.clone();
        cfg.groups = self.groups.clone();
        cfg.upnp = self.upnp;
        cfg.relay_serve = self.relay_serve;
        cfg.dict_path = self.dict_path.clone();
        cfg.dict = self.dict.clone();
        cfg.network_key = self.network_key.clone();
        self.limits.apply(
            &mut cfg.admission,
            &mut cfg.memory,
            &mut cfg.overlay,
            &mut cfg.cast,
        );
        if let Some(v) = self.protocol_version {
            cfg.protocol_version = v;
        }
        if let Some(t) = self.idle_timeout {
            cfg.idle_timeout = t;
            cfg.keep_alive = cfg.keep_alive.min(t / 3);
        }
        cfg
    }
}

/// Merges the flags (and the `P2PS_*` variables clap read into them), the `--config` file and
/// the defaults, and checks the result.
pub(super) fn resolve(args: &NodeArgs, file: FileConfig, dirs: &Dirs) -> Result<Settings> {
    let file_tunables = file.tunables();
    let name = args
        .name
        .clone()
        .or(file.name)
        .unwrap_or_else(|| "node".into());
    check_name(&name)?;
    let (key, key_is_default) = match args.key.clone().or(file.key) {
        Some(k) => (k, false),
        None => (dirs.key_dir()?.join(format!("{name}.key")), true),
    };
    let data_dir = data_dir(args, file.data_dir, file.persist, &key);
    let (control, control_is_default) =
        control_path(args.control.clone().or(file.control).as_deref(), &name)?;
    let strategy = match (args.strategy, file.strategy) {
        (Some(s), _) => Some(s),
        (None, Some(s)) => Some(parse_strategy(&s).map_err(anyhow::Error::msg)?),
        (None, None) => None,
    };
    let t = args.tunables.clone().or(file_tunables);
    let mut overlay = p2ps_overlay::Config::default();
    if let Some(s) = strategy {
        overlay.strategy = s;
    }
    let lookup_mode = match (args.lookup_mode, file.lookup_mode) {
        (Some(m), _) => Some(m),
        (None, Some(m)) => Some(parse_lookup_mode(&m).map_err(anyhow::Error::msg)?),
        (None, None) => None,
    };
    if let Some(m) = lookup_mode {
        overlay.lookup_mode = m;
    }
    let ms = Duration::from_millis;
    if let Some(v) = t.stabilize_interval_ms {
        overlay.stabilize_interval = ms(v);
    }
    if let Some(v) = t.stabilize_timeout_ms {
        overlay.stabilize_timeout = ms(v);
    }
    if let Some(v) = t.finger_refresh_ms {
        overlay.finger_refresh_period = ms(v);
    }
    if let Some(v) = t.list_len {
        overlay.list_len = v;
    }
    if let Some(v) = t.join_timeout_ms {
        overlay.join_timeout = ms(v);
    }
    if let Some(v) = t.join_attempts {
        overlay.join_attempts = v;
    }
    if let Some(v) = t.lookup_timeout_ms {
        overlay.lookup_timeout = ms(v);
    }
    let mut groups = p2ps_overlay::groups::GroupConfig::default();
    if let Some(v) = t.group_refresh_ms {
        groups.refresh = ms(v);
    }
    if let Some(v) = t.merge_probe_ms {
        overlay.merge_probe_interval = ms(v);
    }
    overlay.validate().context("invalid overlay settings")?;
    groups.validate().context("invalid group settings")?;
    if t.idle_timeout_ms == Some(0) {
        bail!("idle_timeout_ms must be greater than zero");
    }
    let dict = args
        .dict
        .clone()
        .or(file.dict.unwrap_or_default())
        .config()?;
    let advertise = if args.advertise.is_empty() {
        file.advertise.unwrap_or_default()
    } else {
        args.advertise.clone()
    };
    if advertise.len() > p2ps::ticket::MAX_TICKET_ADDRS {
        bail!(
            "{} advertised addresses: a ticket holds at most {}",
            advertise.len(),
            p2ps::ticket::MAX_TICKET_ADDRS
        );
    }
    let listen = match (args.listen, &file.listen) {
        (Some(a), _) => a,
        (None, Some(a)) => resolve_listen(a)
            .map_err(anyhow::Error::msg)
            .context("`listen` in the config file")?,
        (None, None) => SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let network_key = match args.network_key.as_ref().or(file.network_key.as_ref()) {
        Some(path) => Some(
            NetworkKey::load(path)
                .with_context(|| format!("reading the network key file {}", path.display()))?,
        ),
        None => None,
    };
    Ok(Settings {
        key,
        key_is_default,
        control,
        control_is_default,
        ticket_file: args.ticket_file.clone().or(file.ticket_file),
        config: NodeConfigParts {
            dict_path: data_dir.as_ref().map(|d| d.join(DICT_FILE)),
            listen,
            advertise,
            overlay,
            groups,
            idle_timeout: t.idle_timeout_ms.map(ms),
            protocol_version: args.protocol_version,
            upnp: args.upnp || file.upnp.unwrap_or(false),
            relay_serve: args.relay_serve || file.relay_serve.unwrap_or(false),
            limits: args.limits.clone().or(file.limits.unwrap_or_default()),
            dict,
            network_key,
        },
        data_dir,
        json: args.json,
        http: super::http::HttpSettings::resolve(
            args.http.or(file.http),
            args.http_token.clone().or(file.http_token),
        )?,
    })
}

/// Where the node keeps its data: `--no-persist` or `persist = false` keep nothing (the flag
/// wins over the file's `data_dir`, and `--data-dir` over the file's `persist`); else
/// `--data-dir`, the file's `data_dir`, or beside the key file: `<KEY>.data` for `<KEY>.key`.
fn data_dir(
    args: &NodeArgs,
    file_dir: Option<PathBuf>,
    file_persist: Option<bool>,
    key: &std::path::Path,
) -> Option<PathBuf> {
    if args.no_persist {
        return None;
    }
    if let Some(d) = &args.data_dir {
        return Some(d.clone());
    }
    if file_persist == Some(false) {
        return None;
    }
    if let Some(d) = file_dir {
        return Some(d);
    }
    let stem = key.file_stem().unwrap_or(key.as_os_str());
    let mut name = stem.to_os_string();
    name.push(".data");
    let mut dir = key.with_file_name(&name);
    if dir == key {
        // The key file itself is called `….data`.
        let mut name = key.as_os_str().to_os_string();
        name.push(".data");
        dir = PathBuf::from(name);
    }
    Some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_cmd::args::tests::parse;
    use crate::node_cmd::config_file::config_log;
    use p2ps::{FingerStrategy, LookupMode};

    fn dirs() -> Dirs {
        Dirs {
            data_home: None,
            home: Some("/home/u".into()),
        }
    }

    #[test]
    fn defaults() {
        let a = parse(&["--create"]).unwrap();
        let s = resolve(&a, FileConfig::default(), &dirs()).unwrap();
        assert_eq!(s.key, PathBuf::from("/home/u/.local/share/p2ps/node.key"));
        assert!(s.key_is_default);
        assert_eq!(s.config.listen, "127.0.0.1:0".parse().unwrap());
        assert!(s.control.ends_with("p2ps/node.sock") || s.control.ends_with("node.sock"));
        assert!(s.control_is_default);
        assert_eq!(s.config.overlay, p2ps_overlay::Config::default());
        let d = Dirs {
            data_home: Some("/data".into()),
            home: Some("/home/u".into()),
        };
        let a = parse(&["--create", "--name", "b"]).unwrap();
        let s = resolve(&a, FileConfig::default(), &d).unwrap();
        assert_eq!(s.key, PathBuf::from("/data/p2ps/b.key"));
        assert!(s.control.ends_with("b.sock"));
        assert!(resolve(&a, FileConfig::default(), &Dirs::default()).is_err());
        let a = parse(&["--create", "--name", "../evil"]).unwrap();
        assert!(resolve(&a, FileConfig::default(), &d).is_err());
    }

    #[test]
    fn the_data_directory() {
        let dict = |s: &Settings| {
            s.config
                .node_config(p2ps::Identity::generate().unwrap())
                .dict_path
        };
        // Beside the key by default.
        let s = resolve(
            &parse(&["--create"]).unwrap(),
            FileConfig::default(),
            &dirs(),
        )
        .unwrap();
        assert_eq!(
            s.data_dir,
            Some(PathBuf::from("/home/u/.local/share/p2ps/node.data"))
        );
        assert_eq!(
            dict(&s),
            Some(PathBuf::from(
                "/home/u/.local/share/p2ps/node.data/dict.redb"
            ))
        );
        let a = parse(&["--create", "--key", "/k/a.key"]).unwrap();
        let s = resolve(&a, FileConfig::default(), &dirs()).unwrap();
        assert_eq!(s.data_dir, Some(PathBuf::from("/k/a.data")));
        let a = parse(&["--create", "--key", "/k/odd.data"]).unwrap();
        let s = resolve(&a, FileConfig::default(), &dirs()).unwrap();
        assert_eq!(s.data_dir, Some(PathBuf::from("/k/odd.data.data")));
        // A directory of one's own, or none.
        let a = parse(&["--create", "--data-dir", "/d"]).unwrap();
        let s = resolve(&a, FileConfig::default(), &dirs()).unwrap();
        assert_eq!(dict(&s), Some(PathBuf::from("/d/dict.redb")));
        let a = parse(&["--create", "--no-persist"]).unwrap();
        let s = resolve(&a, FileConfig::default(), &dirs()).unwrap();
        assert_eq!((s.data_dir.clone(), dict(&s)), (None, None));
        assert!(parse(&["--create", "--no-persist", "--data-dir", "/d"]).is_err());
        let e = parse(&["--create", "--data-dir", ""]).unwrap_err();
        assert!(e.to_string().contains("--no-persist"), "{e}");

        // In the file: relative to it; `persist = false`; flags win.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("node.toml");
        std::fs::write(&path, "data_dir = \"data\"\n").unwrap();
        let s = resolve(
            &parse(&["--create"]).unwrap(),
            FileConfig::load(&path).unwrap(),
            &dirs(),
        )
        .unwrap();
        assert_eq!(s.data_dir, Some(tmp.path().join("data")));
        let a = parse(&["--create", "--no-persist"]).unwrap();
        let s = resolve(&a, FileConfig::load(&path).unwrap(), &dirs()).unwrap();
        assert_eq!(s.data_dir, None);
        std::fs::write(&path, "persist = false\n").unwrap();
        let s = resolve(
            &parse(&["--create"]).unwrap(),
            FileConfig::load(&path).unwrap(),
            &dirs(),
        )
        .unwrap();
        assert_eq!(s.data_dir, None);
        let a = parse(&["--create", "--data-dir", "/d"]).unwrap();
        let s = resolve(&a, FileConfig::load(&path).unwrap(), &dirs()).unwrap();
        assert_eq!(s.data_dir, Some(PathBuf::from("/d")));
        std::fs::write(&path, "data_dir = \"\"\n").unwrap();
        let e = format!("{:#}", FileConfig::load(&path).unwrap_err());
        assert!(e.contains("persist = false"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("node.toml");
        std::fs::write(
            &path,
            r#"
key = "k.key"
listen = "127.0.0.1:5000"
advertise = ["10.0.0.1:5000"]
name = "filenode"
strategy = "chord"
lookup_mode = "steered"
stabilize_interval_ms = 300
list_len = 4
"#,
        )
        .unwrap();
        let file = FileConfig::load(&path).unwrap();
        let a = parse(&["--create", "--listen", "127.0.0.1:6000", "--list-len", "6"]).unwrap();
        let s = resolve(&a, file, &dirs()).unwrap();
        assert_eq!(s.key, tmp.path().join("k.key"));
        assert!(!s.key_is_default);
        assert_eq!(s.config.listen, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(s.config.advertise, vec!["10.0.0.1:5000".parse().unwrap()]);
        assert!(s.control.ends_with("filenode.sock"));
        assert_eq!(s.config.overlay.strategy, FingerStrategy::Chord);
        assert_eq!(s.config.overlay.lookup_mode, LookupMode::Steered);
        assert!(parse(&["--create", "--lookup-mode", "iterative"]).is_err());
        assert_eq!(
            s.config.overlay.stabilize_interval,
            Duration::from_millis(300)
        );
        assert_eq!(s.config.overlay.list_len, 6);

        assert!(!s.config.upnp && !s.config.relay_serve);

        std::fs::write(&path, "stabilise_interval_ms = 3\n").unwrap();
        let e = format!("{:#}", FileConfig::load(&path).unwrap_err());
        assert!(e.contains("stabilise_interval_ms"), "{e}");
        std::fs::write(&path, "strategy = \"pastry\"\n").unwrap();
        let file = FileConfig::load(&path).unwrap();
        assert!(resolve(&parse(&["--create"]).unwrap(), file, &dirs()).is_err());
        let a = parse(&["--create", "--stabilize-interval-ms", "0"]).unwrap();
        assert!(resolve(&a, FileConfig::default(), &dirs()).is_err());
    }

    #[test]
    fn dictionary_quotas_from_flags_and_the_file() {
        let quotas = |s: &Settings| {
            s.config
                .node_config(p2ps::Identity::generate().unwrap())
                .dict
                .quotas
        };
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("node.toml");
        std::fs::write(&path, "[dict]\nmax_keys = 50\nmax_keys_per_writer = 5\n").unwrap();
        let a = parse(&["--create", "--dict-max-keys-per-writer", "9"]).unwrap();
        let s = resolve(&a, FileConfig::load(&path).unwrap(), &dirs()).unwrap();
        let q = quotas(&s);
        assert_eq!((q.keys, q.keys_per_writer), (50, 9));
        assert_eq!(q.bytes, p2ps::dict::Quotas::default().bytes);
        let s = resolve(
            &parse(&["--create"]).unwrap(),
            FileConfig::default(),
            &dirs(),
        )
        .unwrap();
        assert_eq!(quotas(&s), p2ps::dict::Quotas::default());
        let a = parse(&["--create", "--dict-max-keys", "0"]).unwrap();
        let e = resolve(&a, FileConfig::default(), &dirs()).unwrap_err();
        assert!(e.to_string().contains("--dict-max-keys must be"), "{e}");
        std::fs::write(&path, "[dict]\nmax_value = 5\n").unwrap();
        let e = format!("{:#}", FileConfig::load(&path).unwrap_err());
        assert!(e.contains("max_value"), "{e}");
        std::fs::write(&path, "[dict]\nmax_value_bytes = 100000\n").unwrap();
        let a = parse(&["--create"]).unwrap();
        let s = resolve(&a, FileConfig::load(&path).unwrap(), &dirs()).unwrap();
        let cfg = s.config.node_config(p2ps::Identity::generate().unwrap());
        assert_eq!(cfg.dict.max_value, 100_000);
    }

    #[test]
    fn the_file_sets_upnp_relay_serve_and_log() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("node.toml");
        std::fs::write(
            &path,
            "upnp = true\nrelay_serve = true\nlog = \"info\"\nlisten = \"localhost:0\"\n",
        )
        .unwrap();
        let a = parse(&["--create", "--config", &path.to_string_lossy()]).unwrap();
        assert_eq!(config_log(&a).unwrap().as_deref(), Some("info"));
        let s = resolve(&a, FileConfig::load(&path).unwrap(), &dirs()).unwrap();
        assert!(s.config.upnp);
        assert!(s.config.relay_serve);
        assert!(s.config.listen.ip().is_loopback(), "{}", s.config.listen);
        assert_eq!(s.config.listen.port(), 0);
        // Flags still turn them on without a file.
        let a = parse(&["--create", "--upnp", "--relay-serve"]).unwrap();
        let s = resolve(&a, FileConfig::default(), &dirs()).unwrap();
        assert!(s.config.upnp && s.config.relay_serve);
        assert_eq!(config_log(&a).unwrap(), None);
        std::fs::write(&path, "upnp = \"yes\"\n").unwrap();
        assert!(FileConfig::load(&path).is_err());
        std::fs::write(&path, "listen = \"localhost\"\n").unwrap();
        let e = format!(
            "{:#}",
            resolve(&a, FileConfig::load(&path).unwrap(), &dirs()).unwrap_err()
        );
        assert!(e.contains("cannot resolve") && e.contains("listen"), "{e}");
    }

    #[test]
    fn the_network_key() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let key_path = tmp.path().join("net.key");
        let key = NetworkKey::create(&key_path).unwrap();
        let network = |s: &Settings| {
            s.config
                .node_config(p2ps::Identity::generate().unwrap())
                .network_key
        };
        // None by default; the flag; the file's path, relative to the file.
        let s = resolve(
            &parse(&["--create"]).unwrap(),
            FileConfig::default(),
            &dirs(),
        )
        .unwrap();
        assert_eq!(network(&s), None);
        let flag = key_path.to_str().unwrap();
        let a = parse(&["--create", "--network-key", flag]).unwrap();
        let s = resolve(&a, FileConfig::default(), &dirs()).unwrap();
        assert_eq!(network(&s), Some(key.clone()));
        let conf = tmp.path().join("node.toml");
        std::fs::write(&conf, "network_key = \"net.key\"\n").unwrap();
        let s = resolve(
            &parse(&["--create"]).unwrap(),
            FileConfig::load(&conf).unwrap(),
            &dirs(),
        )
        .unwrap();
        assert_eq!(network(&s), Some(key));
        // A file others may read, a missing file and a file that is not a key: clear errors.
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!(
            "{:#}",
            resolve(&a, FileConfig::default(), &dirs()).unwrap_err()
        );
        assert!(e.contains("network key") && e.contains("chmod 600"), "{e}");
        let a = parse(&["--create", "--network-key", "/nonexistent/net.key"]).unwrap();
        let e = format!(
            "{:#}",
            resolve(&a, FileConfig::default(), &dirs()).unwrap_err()
        );
        assert!(
            e.contains("does not exist") && e.contains("network-key new"),
            "{e}"
        );
        let junk = tmp.path().join("junk.key");
        std::fs::write(&junk, "hello\n").unwrap();
        std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
        let a = parse(&["--create", "--network-key", junk.to_str().unwrap()]).unwrap();
        let e = format!(
            "{:#}",
            resolve(&a, FileConfig::default(), &dirs()).unwrap_err()
        );
        assert!(e.contains("not a network key"), "{e}");
    }
}
