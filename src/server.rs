//! A running broker: store, core and listeners, started and stopped together.
//!
//! Owns: start-up order (open the store, restore the core, prepare bridges,
//! bind listeners, start bridges) and graceful shutdown (stop accepting, stop
//! bridges, tell clients, wait for them, flush the store). `starling serve`
//! and the end-to-end tests both use [`Server`].
//! Must never: contain protocol or routing logic.

use crate::bridge::{Bridge, BridgeStatus};
use crate::broker::Broker;
use crate::config::{Config, StorageBackend};
use crate::net;
use crate::store::{MemoryStore, SledStore, Store};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

/// Two TLS stacks are linked (rumqttc's tokio-rustls picks aws-lc-rs, the
/// HTTP hook's ureq ring), so rustls cannot guess the process's provider:
/// name it once, before any TLS configuration is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// How long shutdown waits for connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The runtime `starling serve` runs on: Tokio's multi-threaded scheduler,
/// told when a worker wakes from idle so that the client core keeps the
/// kernel's order of events (`client::worker_woke_from_idle`).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_unpark(crate::client::worker_woke_from_idle)
        .build()
}

pub struct Server {
    broker: Arc<Broker>,
    mqtt_addr: SocketAddr,
    ws_addr: SocketAddr,
    admin_addr: SocketAddr,
    /// MQTT over TLS and `wss://`, when `[tls]` is configured.
    tls_addrs: Option<(SocketAddr, SocketAddr)>,
    tls: Option<Arc<net::tls::Tls>>,
    stop_accepting: watch::Sender<bool>,
    accept_tasks: TaskTracker,
    connections: TaskTracker,
    bridges: Vec<Bridge>,
    canary: Arc<crate::monitor::Canary>,
    /// The plug-ins this server built and handed to the broker (as its
    /// `Backplane` and `DeliveryWatch`) and to the listeners (files).
    plugins: Plugins,
}

pub use crate::plugins::Plugins;

impl Server {
    /// Opens the store, restores state and binds the listeners.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        install_crypto_provider();
        let store: Arc<dyn Store> = match config.storage.backend {
            StorageBackend::Memory => Arc::new(MemoryStore::new()),
            StorageBackend::Sled => {
                let dir = config.storage.data_dir.clone();
                let store = tokio::task::spawn_blocking(move || SledStore::open(&dir))
                    .await?
                    .with_context(|| format!("cannot open storage.data_dir {}", config.storage.data_dir.display()))?;
                Arc::new(store)
            }
        };
        Server::start_with_store(config, store).await
    }

    /// Starts on a store the caller opened (tests inject failing stores).
    pub async fn start_with_store(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Server> {
        install_crypto_provider();
        let classes_missing = !config.classes.dir.as_os_str().is_empty() && !config.classes.dir.is_dir();
        if classes_missing && config.classes.required {
            anyhow::bail!(
                "classes.dir = {:?}: no such directory (relative paths are the config file's; set dir = \"\" to \
                 run without topic classes)",
                config.classes.dir.display().to_string()
            );
        }
        if classes_missing {
            tracing::warn!(dir = %config.classes.dir.display(), "no topic classes: the default classes.dir is missing");
        }
        let classes = if config.classes.dir.as_os_str().is_empty() {
            crate::classes::ClassSet::default()
        } else {
            crate::classes::ClassSet::load_dir(&config.classes.dir)
                .map_err(|e| anyhow::anyhow!("invalid topic classes in {}:\n{e}", config.classes.dir.display()))?
        };
        let class_names: Vec<String> = classes.classes().iter().map(|c| c.name.clone()).collect();
        let broker = Broker::with_classes(config.clone(), store.clone(), classes)
            .context("cannot restore state from the store")?;
        let mut plugins = Plugins::default();
        if config.push.webhook.is_some() {
            let names: Vec<&str> = class_names.iter().map(String::as_str).collect();
            let push = Arc::new(crate::push::Push::new(config.push.clone(), &names, store.clone())?);
            tokio::spawn(push.clone().run_sender(broker.shutdown_signal()));
            broker.attach_delivery_watch(push.clone());
            plugins.push = Some(push);
        }
        if let Some(cluster_config) = &config.cluster {
            let cluster = crate::cluster::Cluster::start(cluster_config, &broker).await?;
            tracing::info!(node = cluster.node(), "cluster: this node joins over NATS");
            broker.attach_backplane(cluster.clone());
            plugins.cluster = Some(cluster);
        }
        if config.files.enabled {
            let (config, store) = (config.clone(), store.clone());
            let files = tokio::task::spawn_blocking(move || crate::files::Files::open(&config, store))
                .await?
                .context("cannot open the uploaded files (files.dir)")?;
            plugins.files = Some(Arc::new(files));
        }
        // Bridges' local sessions exist (and queue) before any client can publish;
        // their links start once the listeners are bound.
        let mut bridges =
            config.bridge.iter().map(|b| Bridge::prepare(&broker, b)).collect::<anyhow::Result<Vec<_>>>()?;
        let listener = net::listen(config.mqtt.bind, config.mqtt.backlog)
            .with_context(|| format!("cannot listen on mqtt.bind {}", config.mqtt.bind))?;
        let mqtt_addr = listener.local_addr()?;
        let ws_listener = net::listen(config.websocket.bind, config.mqtt.backlog)
            .with_context(|| format!("cannot listen on websocket.bind {}", config.websocket.bind))?;
        let ws_addr = ws_listener.local_addr()?;
        let admin_listener = net::listen(config.http.bind, config.mqtt.backlog)
            .with_context(|| format!("cannot listen on http.bind {}", config.http.bind))?;
        let admin_addr = admin_listener.local_addr()?;
        let tls = config.tls.as_ref().map(net::tls::Tls::load).transpose()?.map(Arc::new);
        let tls_listeners = match &tls {
            Some(_) => {
                let mqtt = net::listen(config.mqtt.tls_bind, config.mqtt.backlog)
                    .with_context(|| format!("cannot listen on mqtt.tls_bind {}", config.mqtt.tls_bind))?;
                let ws = net::listen(config.websocket.tls_bind, config.mqtt.backlog)
                    .with_context(|| format!("cannot listen on websocket.tls_bind {}", config.websocket.tls_bind))?;
                Some((mqtt, ws))
            }
            None => None,
        };
        let (stop_accepting, stop_rx) = watch::channel(false);
        let accept_tasks = TaskTracker::new();
        let connections = TaskTracker::new();
        let fd_limit = net::raise_fd_limit();
        tracing::info!(
            open_files = fd_limit,
            "connection ceiling: about this many connections in all (the open-file limit)"
        );
        // Each listener has its own connection limit; the per-IP gate is shared.
        let limit = || Arc::new(Semaphore::new(config.mqtt.max_connections));
        let gate = net::gate::ConnectionGate::new(net::gate::GateLimits {
            max_per_ip: config.mqtt.max_connections_per_ip,
            connects_per_sec: config.mqtt.connects_per_ip_per_sec,
            limit_loopback: config.mqtt.limit_loopback_peers,
        });
        let proxies = |proxy_protocol: bool| {
            Arc::new(net::Proxies {
                trusted: net::proxy::TrustedProxies::from_config(&config.net),
                proxy_protocol,
                header_timeout: std::time::Duration::from_secs(config.mqtt.connect_timeout_secs),
                gate: gate.clone(),
            })
        };
        let (mqtt_proxies, ws_proxies) =
            (proxies(config.mqtt.proxy_protocol), proxies(config.websocket.proxy_protocol));
        let canary = Arc::new(crate::monitor::Canary::default());
        let admin = Arc::new(crate::admin::AdminState {
            broker: broker.clone(),
            gate: gate.clone(),
            bridges: bridges.iter().map(Bridge::monitor).collect(),
            canary: canary.clone(),
            plugins: plugins.clone(),
        });
        accept_tasks.spawn(crate::admin::serve(admin_listener, admin, stop_rx.clone()));
        if let Some(files) = plugins.files.clone() {
            accept_tasks.spawn(crate::files::run_sweeper(files, stop_rx.clone()));
        }
        let b = broker.clone();
        accept_tasks.spawn(net::accept_loop(
            listener,
            limit(),
            gate.clone(),
            connections.clone(),
            stop_rx.clone(),
            mqtt_proxies.clone(),
            move |s, p| net::serve_mqtt(s, p, b.clone()),
        ));
        let (b, f, x) = (broker.clone(), plugins.files.clone(), ws_proxies.clone());
        accept_tasks.spawn(net::accept_loop(
            ws_listener,
            limit(),
            gate.clone(),
            connections.clone(),
            stop_rx.clone(),
            ws_proxies.clone(),
            move |s, p| net::serve_websocket(s, p, b.clone(), f.clone(), x.clone()),
        ));
        let mut tls_addrs = None;
        if let (Some(tls), Some((mqtt_tls, ws_tls))) = (&tls, tls_listeners) {
            tls_addrs = Some((mqtt_tls.local_addr()?, ws_tls.local_addr()?));
            let (b, t) = (broker.clone(), tls.clone());
            accept_tasks.spawn(net::accept_loop(
                mqtt_tls,
                limit(),
                gate.clone(),
                connections.clone(),
                stop_rx.clone(),
                mqtt_proxies,
                move |s, p| net::serve_mqtt_tls(s, p, b.clone(), t.clone()),
            ));
            let (b, t, f, x) = (broker.clone(), tls.clone(), plugins.files.clone(), ws_proxies.clone());
            accept_tasks.spawn(net::accept_loop(
                ws_tls,
                limit(),
                gate.clone(),
                connections.clone(),
                stop_rx.clone(),
                ws_proxies,
                move |s, p| net::serve_websocket_tls(s, p, b.clone(), t.clone(), f.clone(), x.clone()),
            ));
        }
        if config.monitor.interval_secs > 0 {
            let tls = tls_addrs.zip(config.tls.as_ref()).map(|((mqtt, ws), tls)| (mqtt, ws, tls));
            let probes =
                crate::monitor::probes(mqtt_addr, ws_addr, tls, broker.security().canary_secret(), &config.monitor);
            accept_tasks.spawn(crate::monitor::run(canary.clone(), probes, config.monitor.clone(), stop_rx.clone()));
        }
        tracing::info!(mqtt = %mqtt_addr, websocket = %ws_addr, tls = ?tls_addrs, "starling listening");
        for bridge in &mut bridges {
            bridge.start();
        }
        Ok(Server {
            broker,
            mqtt_addr,
            ws_addr,
            admin_addr,
            tls_addrs,
            tls,
            stop_accepting,
            accept_tasks,
            connections,
            bridges,
            canary,
            plugins,
        })
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// The WebSocket port: `/mqtt` and `/ws`.
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// MQTT over TLS, when `[tls]` is configured.
    pub fn mqtt_tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addrs.map(|a| a.0)
    }

    /// The `wss://` port, when `[tls]` is configured.
    pub fn ws_tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addrs.map(|a| a.1)
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// This node's cluster membership, when `[cluster]` is set.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.plugins.cluster.as_ref()
    }

    /// The offline push, when `[push] webhook` is set.
    pub fn push(&self) -> Option<&Arc<crate::push::Push>> {
        self.plugins.push.as_ref()
    }

    /// Uploaded files, when `[files]` is enabled.
    pub fn files(&self) -> Option<&Arc<crate::files::Files>> {
        self.plugins.files.as_ref()
    }

    /// Applies a changed security policy (SIGHUP): TLS certificates, the
    /// password file, token keys, `[[acl]]` rules and roles are read again;
    /// connections stay (TLS ones keep their certificate), and
    /// every check from now on uses the new policy. Listeners, storage and
    /// the rest of the configuration keep what they started with.
    pub fn reload(&self, config: &Config) -> anyhow::Result<()> {
        if let (Some(tls), Some(tls_config)) = (&self.tls, &config.tls) {
            tls.reload(tls_config)?;
        }
        self.broker.security().reload(config)?;
        let revoked = self.broker.recheck_connected();
        if revoked > 0 {
            tracing::info!(revoked, "subscriptions the reloaded rules no longer allow were dropped");
        }
        Ok(())
    }

    /// The canary's last results (`[monitor]`).
    pub fn canary(&self) -> &crate::monitor::Canary {
        &self.canary
    }

    /// The state of every configured bridge, in configuration order.
    pub fn bridges(&self) -> Vec<BridgeStatus> {
        self.bridges.iter().map(Bridge::status).collect()
    }

    /// Stops accepting, stops the bridges, disconnects every client (MQTT 5:
    /// reason 0x8B), waits up to five seconds for them, then saves sessions
    /// and flushes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop_accepting.send(true);
        self.accept_tasks.close();
        self.accept_tasks.wait().await;
        // Bridges first: they say goodbye to their remotes and detach their
        // sessions, which are then saved with the others.
        for bridge in &self.bridges {
            bridge.stop();
        }
        for bridge in self.bridges {
            bridge.stopped().await;
        }
        self.broker.begin_shutdown();
        self.connections.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.connections.wait()).await.is_err() {
            tracing::warn!("some connections did not close within the grace period");
        }
        let broker = self.broker.clone();
        tokio::task::spawn_blocking(move || broker.flush_all()).await?.context("cannot flush the store")?;
        tracing::info!("starling stopped");
        Ok(())
    }
}
