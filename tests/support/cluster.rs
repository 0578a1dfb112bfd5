//! An OpenBao cluster on loopback with Raft storage: N nodes, each with a
//! data directory of its own, initialised with one key share, unsealed,
//! joined and answering KV v2 at `secret/` with the root token `root`
//! (so that [`Mount::builder`](super::Mount::builder) works on any node
//! as on a dev server). `Cluster::start_n(1)` is a one-node server whose
//! data survives [`Cluster::restart`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::{bao_binary, die_with_parent, free_ports, poll, Bao};

/// How long each step of starting a cluster may take before the fixture
/// panics with the nodes' logs.
const STEP: Duration = Duration::from_secs(60);

/// What a node answers on `sys/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The active node (200).
    Active,
    /// An unsealed standby (429).
    Standby,
    /// Sealed (503), or not yet initialised (501).
    Sealed,
    /// No answer at all (killed).
    Down,
}

/// One node: the [`Bao`] that talks to it (its `dir` holds the config,
/// the data directory and the log) and how to start it again.
struct Node {
    bao: Bao,
    config: PathBuf,
}

impl Node {
    /// Writes node `i`'s config for these ports (its address follows).
    fn listen_on(&mut self, i: usize, api: u16, cluster: u16, multiplier: u32) {
        let data = self.bao.dir.path().join("raft");
        std::fs::write(
            &self.config,
            format!(
                "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"node{i}\"\n  performance_multiplier = {multiplier}\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{api}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\n\
                 api_addr = \"http://127.0.0.1:{api}\"\ncluster_addr = \"https://127.0.0.1:{cluster}\"\n\
                 disable_mlock = true\nui = false\nlog_level = \"info\"\n",
                data.display()
            ),
        )
        .expect("node config");
        self.bao.addr = format!("http://127.0.0.1:{api}");
    }
}

/// A Raft cluster of OpenBao servers on loopback. Dropping it kills them all.
pub struct Cluster {
    nodes: Vec<Node>,
    unseal_key: String,
}

impl Cluster {
    /// Three nodes.
    pub fn start() -> Cluster {
        Cluster::start_n(3)
    }

    /// `n` nodes: node 0 is initialised and unsealed first (and is the
    /// active node when this returns), the others join it and are unsealed.
    pub fn start_n(n: usize) -> Cluster {
        assert!(n >= 1, "a cluster needs a node");
        // Raft timing: OpenBao's default multiplier (5) is meant for slow
        // production networks; SECRETFS_RAFT_MULTIPLIER=5 measures with it.
        let multiplier: u32 = std::env::var("SECRETFS_RAFT_MULTIPLIER")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let ports = free_ports(2 * n);
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::create_dir(dir.path().join("raft")).expect("raft dir");
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                // Never follow a standby's redirect: the test asks the node it names.
                .max_redirects(0)
                .build()
                .into();
            let bao = Bao {
                child: None,
                addr: String::new(),
                dir,
                agent,
            };
            let config = bao.dir.path().join("node.hcl");
            let mut node = Node { bao, config };
            node.listen_on(i, ports[2 * i], ports[2 * i + 1], multiplier);
            nodes.push(node);
        }
        let mut cluster = Cluster {
            nodes,
            unseal_key: String::new(),
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        // A port chosen free may be taken by another process before the
        // node binds it: such a node exits at once and gets new ports
        // (before init, nothing refers to them yet).
        for i in 0..n {
            for _ in 0..3 {
                if !cluster.exited_on_busy_port(i) {
                    break;
                }
                let fresh = free_ports(2);
                cluster.nodes[i].listen_on(i, fresh[0], fresh[1], multiplier);
                cluster.spawn(i);
            }
        }
        for i in 0..n {
            cluster.wait_for(i, "to answer", |r| r != Role::Down);
        }

        // Init with one key share, on node 0.
        let (status, init) = cluster.nodes[0].bao.api_as(
            "",
            "PUT",
            "sys/init",
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        );
        assert_eq!(status, 200, "init: {init}\n{}", cluster.logs());
        cluster.unseal_key = init["keys_base64"][0]
            .as_str()
            .expect("unseal key")
            .to_string();
        let first_root = init["root_token"].as_str().expect("root token").to_string();
        cluster.unseal(0);
        cluster.wait_for(0, "to become active", |r| r == Role::Active);

        // The tests' root token, `root`, as on a dev server.
        let (status, resp) = cluster.nodes[0].bao.api_as(
            &first_root,
            "POST",
            "auth/token/create",
            Some(json!({"id": "root", "policies": ["root"], "no_parent": true})),
        );
        assert!(status < 300, "root token: {status} {resp}");

        // Autopilot makes a joined node a voter once it has been healthy
        // for server_stabilization_time (10 s by default): until then a
        // killed leader has no successor.
        let (status, resp) = cluster.nodes[0].bao.api(
            "POST",
            "sys/storage/raft/autopilot/configuration",
            Some(json!({"server_stabilization_time": "1s"})),
        );
        assert!(status < 300, "autopilot configuration: {status} {resp}");

        let leader = cluster.nodes[0].bao.addr.clone();
        for i in 1..n {
            let (status, resp) = cluster.nodes[i].bao.api_as(
                "",
                "POST",
                "sys/storage/raft/join",
                Some(json!({ "leader_api_addr": leader })),
            );
            assert!(status < 300, "node{i} join: {status} {resp}");
            cluster.unseal(i);
        }
        for i in 1..n {
            cluster.wait_for(i, "to become a standby", |r| r == Role::Standby);
        }
        cluster.wait_voters();
        cluster.nodes[0].bao.enable_kv("secret", 2);
        // Standbys answer reads from their own copy: wait until each has the mount.
        for i in 1..n {
            cluster.nodes[i].bao.wait_until_kv_answers("secret", 2);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.bao.child.is_none(), "node{i} runs already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.bao.dir.path().join("openbao.log"))
            .expect("log file");
        let mut cmd = Command::new(bao_binary());
        cmd.arg("server")
            .arg(format!("-config={}", node.config.display()))
            .env("HOME", node.bao.dir.path())
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        die_with_parent(&mut cmd);
        let child: Child = cmd.spawn().expect("cannot start bao");
        node.bao.child = Some(child);
    }

    /// Waits (bounded) until node `i` has bound its ports (its own log
    /// says so: another process answering on its port proves nothing) or
    /// exited; true when it exited because a port was taken (it is then
    /// marked not running).
    fn exited_on_busy_port(&mut self, i: usize) -> bool {
        let mut exited = false;
        let _ = poll(STEP, || {
            let node = &mut self.nodes[i].bao;
            if let Some(Ok(Some(_))) = node.child.as_mut().map(|c| c.try_wait()) {
                exited = true;
                return Some(());
            }
            node.log().contains("OpenBao server started").then_some(())
        });
        if !exited || !self.nodes[i].bao.log().contains("address already in use") {
            return false;
        }
        self.nodes[i].bao.child = None;
        true
    }

    fn unseal(&self, i: usize) {
        let (status, resp) = self.nodes[i].bao.api_as(
            "",
            "PUT",
            "sys/unseal",
            Some(json!({ "key": self.unseal_key })),
        );
        assert_eq!(status, 200, "node{i} unseal: {resp}\n{}", self.logs());
    }

    /// Waits (bounded) until node `i`'s role satisfies `ok`.
    fn wait_for(&self, i: usize, what: &str, ok: impl Fn(Role) -> bool) {
        let mut last = Role::Down;
        let reached = poll(STEP, || {
            last = self.role(i);
            ok(last).then_some(())
        });
        assert!(
            reached.is_some(),
            "node{i} did not come {what} within {STEP:?} (it is {last:?}):\n{}",
            self.logs()
        );
    }

    /// Waits (bounded) until every node is a Raft voter.
    fn wait_voters(&self) {
        let mut last = Value::Null;
        let all = poll(STEP, || {
            let (status, resp) =
                self.nodes[0]
                    .bao
                    .api("GET", "sys/storage/raft/configuration", None);
            last = resp;
            let servers = last["data"]["config"]["servers"].as_array()?;
            (status == 200
                && servers.len() == self.len()
                && servers.iter().all(|s| s["voter"] == true))
            .then_some(())
        });
        assert!(
            all.is_some(),
            "not every node became a voter within {STEP:?}: {last}\n{}",
            self.logs()
        );
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`, to talk to (`api`, `kv2_put`, `kv2_get`, … with the root token).
    pub fn node(&self, i: usize) -> &Bao {
        &self.nodes[i].bao
    }

    /// Every node's address, in node order.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.bao.addr.clone()).collect()
    }

    /// What node `i` says of itself (without following any redirect).
    pub fn role(&self, i: usize) -> Role {
        let node = &self.nodes[i].bao;
        if node.child.is_none() {
            return Role::Down;
        }
        let url = format!(
            "{}/v1/sys/health?standbyok=false&perfstandbyok=false",
            node.addr
        );
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        match agent.get(&url).call().map(|r| r.status().as_u16()) {
            Ok(200) => Role::Active,
            Ok(429 | 473) => Role::Standby,
            Ok(_) => Role::Sealed,
            Err(_) => Role::Down,
        }
    }

    /// The active node, if one is (now).
    pub fn active(&self) -> Option<usize> {
        (0..self.len()).find(|&i| self.role(i) == Role::Active)
    }

    /// Waits (bounded) until a node is active, and returns it.
    pub fn wait_active(&self, within: Duration) -> usize {
        poll(within, || self.active())
            .unwrap_or_else(|| panic!("no active node within {within:?}:\n{}", self.logs()))
    }

    /// A standby (unsealed, not active) node, if any.
    pub fn standby(&self) -> Option<usize> {
        (0..self.len()).find(|&i| self.role(i) == Role::Standby)
    }

    /// Kills node `i` (SIGKILL: no goodbye to its peers).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].bao.stop();
    }

    /// Starts node `i` again on its data, and unseals it (a restarted node
    /// comes back sealed); returns once it is active or a standby.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_for(i, "back", |r| r != Role::Down);
        self.unseal(i);
        self.wait_for(i, "unsealed", |r| matches!(r, Role::Active | Role::Standby));
    }

    /// Every node's log, for panics.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let log = n.bao.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- node{i} ({}) ---\n{}\n", n.bao.addr, tail.join("\n"))
            })
            .collect()
    }

    /// Where node `i` keeps its files.
    pub fn dir(&self, i: usize) -> &Path {
        self.nodes[i].bao.dir.path()
    }
}
