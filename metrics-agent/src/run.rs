//! `metrics-agent run`: preflight, load and attach, serve `/metrics`, follow
//! process events, and detach everything on SIGINT or SIGTERM.

use std::{
    io::ErrorKind,
    os::fd::AsFd,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Result, anyhow};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, RingBuf};
use metrics_common::{events::ProcEvent, maps as names};
use prometheus_client::registry::Registry;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::{
    agent_stats::AgentStats,
    audit::reader::AuditTask,
    collector::CounterMaps,
    config::Config,
    http,
    kernel::Kernel,
    preflight,
    proc_events::Tracer,
    run_args::RunArgs,
    target::Target,
    upstream_addresses::{self, AddressTable},
};

/// How often traced processes are checked for a libssl loaded after attach.
const LIBRARY_RESCAN: Duration = Duration::from_secs(2);

pub fn run(args: RunArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let config = Config::from_args(&args)?;
    let capture_cycle = crate::audit::capture::test_cycle_from_env()?;
    // Checked before anything is attached: a bad price file is a start-up error.
    let prices = crate::audit::cost::PriceTable::load(config.prices.as_deref())?;
    let target = Target::resolve(&config.target)?;
    preflight::check()?;
    crate::http::limits::raise_open_files_limit(config.open_files_needed());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run_async(config, target, prices, capture_cycle, started))
}

async fn run_async(
    config: Config,
    target: Target,
    prices: crate::audit::cost::PriceTable,
    capture_cycle: Option<Duration>,
    started: std::time::Instant,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| match e.kind() {
        ErrorKind::AddrInUse => {
            anyhow!("listen address {} is already in use: pass another with --listen ADDR", config.listen)
        }
        _ => anyhow!("cannot listen on {}: {e}", config.listen),
    })?;
    // Served now, not once loaded: loading takes seconds, and until then a
    // scrape would wait unanswered in the listen queue (`http::starting`).
    let (stop_tx, stop_rx) = watch::channel(false);
    let server_stats = Arc::new(crate::http::server::ServerStats::default());
    let (starting, full_app) = crate::http::starting::router();
    let server = tokio::spawn(crate::http::server::serve(
        listener,
        starting,
        config.server_limits,
        server_stats.clone(),
        stop_rx.clone(),
    ));

    let (mode, why) = config.attach.resolve()?;
    let mut kernel = Kernel::load(mode, config.capture_ring_kib * 1024)?;
    let (pid_at, flags_at) = preflight::newtask_offsets()?;
    kernel.set_config(names::config::NEWTASK_PID_OFFSET, pid_at)?;
    kernel.set_config(names::config::NEWTASK_FLAGS_OFFSET, flags_at)?;
    if let Target::Exe { comms, .. } = &target {
        kernel.watch_comms(comms)?;
    }
    let mut provider_map = BpfHashMap::try_from(kernel.take_map(names::PROVIDER_ADDRS)?)?;
    let table = AddressTable::default();
    for failure in upstream_addresses::resolve_all(&config.providers, &mut provider_map, &table).await {
        log::warn!("{failure} (retrying every {} s)", config.resolve_interval_seconds);
    }
    let conns = Arc::new(Mutex::new(BpfHashMap::try_from(kernel.take_map(names::CONNS)?)?));
    let ring = RingBuf::try_from(kernel.take_map(names::PROC_EVENTS)?)?;
    let stats = Arc::new(AgentStats::default());
    let counter_maps = Arc::new(CounterMaps::take(&mut kernel)?);
    let payloads = RingBuf::try_from(kernel.take_map(names::PAYLOADS)?)?;
    let mut capture = Array::<MapData, u32>::try_from(kernel.take_map(names::CAPTURE)?)?;
    let rings = crate::export::system::RingFill::open_all(&[
        ("payloads", payloads.as_fd(), u64::from(config.capture_ring_kib) * 1024),
        ("process_events", ring.as_fd(), u64::from(names::PROC_EVENTS_BYTES)),
    ]);
    let mut registry = Registry::default();

    // Signals first: a SIGTERM during attaching must still detach cleanly.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    // Follow process events before looking for targets, so none starts unseen.
    // SAFETY: the AsyncFd owns the ring buffer, so its fd outlives the registration.
    let mut ring =
        unsafe { AsyncFd::register(ring) }.map_err(|e| anyhow!("watching the process event ring buffer: {e}"))?;

    let records = crate::records::bus();
    // Consumers of records subscribe here, before the audit task starts.
    let mut routes = axum::Router::new();
    let storage = match &config.storage {
        Some(storage) => {
            let running = crate::store::start(storage, &records).await?;
            routes = routes.merge(running.routes.clone());
            Some(running)
        }
        None => None,
    };
    let exporters = crate::export::start(
        crate::export::Inputs {
            settings: config.export.clone(),
            hot_path: crate::export::hot_path::HotPathSource {
                maps: counter_maps.clone(),
                conns: conns.clone(),
                providers: upstream_addresses::slot_names(&config.providers),
            },
            stats: stats.clone(),
            conns: conns.clone(),
            rings,
            provider_addresses: table.clone(),
            http: server_stats.clone(),
            storage: storage.as_ref().map(|s| s.stats.clone()),
        },
        &records,
        &mut registry,
        stop_rx.clone(),
    )?;
    // The live stream and dashboard: aggregates records, publishes every interval.
    let live = crate::live::Live::new(config.stream);
    let routes = routes.merge(live.routes(stop_rx.clone()));
    let live_task = {
        let maps = counter_maps.clone();
        let health = crate::live::HealthSources {
            stats: Some(stats.clone()),
            capture_drops: Some(Box::new(move || maps.capture_drops())),
            audit: config.audit,
            sample_every: config.sample_every,
            system: exporters.source.system.clone().map(|system| -> crate::live::SystemSource {
                Box::new(move || crate::export::system::as_json(&system.latest()))
            }),
        };
        tokio::spawn(live.run(records.subscribe(), health, stop_rx.clone()))
    };
    let audit = if config.audit {
        use metrics_common::capture::control;
        capture.set(control::SAMPLE_EVERY, config.sample_every, 0)?;
        capture.set(control::MESSAGE_CAP_KIB, config.message_cap_kib, 0)?;
        capture.set(control::ENABLED, 1, 0)?;
        let task = AuditTask {
            ring: payloads,
            control: capture,
            counters: counter_maps.clone(),
            stats: stats.clone(),
            print_requests: config.print_requests,
            message_cap_bytes: config.message_cap_kib as usize * 1024,
            provider_names: upstream_addresses::slot_names(&config.providers),
            sample_every: config.sample_every,
            max_sample_every: config.max_sample_every,
            prices,
            application_id: config.application_id.clone(),
            identity: config.identity.clone(),
            cpu_budget_percent: config.capture_cpu_budget_percent,
            memory_budget_bytes: config.audit_memory_mib as usize * 1024 * 1024,
            records_out: records.clone(),
            open_connections: {
                let conns = conns.clone();
                Box::new(move || {
                    let conns = conns.lock().ok()?;
                    conns.iter().map(|entry| entry.map(|(_, c)| c.conn_id)).collect::<Result<_, _>>().ok()
                })
            },
            capture_cycle,
            nice_boost: config.audit_thread_nice_boost,
        };
        Some(task.spawn(stop_rx.clone()).map_err(|e| anyhow::anyhow!("starting the audit thread: {e}"))?)
    } else {
        None
    };
    // Readiness is served without the token: it says nothing but "attached or not".
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = crate::http::auth::protect(http::router(Arc::new(registry), routes), config.api_token.as_ref())
        .merge(http::readiness(ready.clone()));
    let app = crate::http::guard::protect(
        app,
        crate::http::guard::HostAllowlist::new(config.listen, &config.api.allowed_hosts),
    );
    let _ = full_app.set(app);
    let _trimmer = AbortOnDrop(tokio::spawn(crate::heap::keep_trimming()));
    let resolver = tokio::spawn(upstream_addresses::keep_resolving(
        config.providers.clone(),
        provider_map,
        table.clone(),
        Duration::from_secs(config.resolve_interval_seconds),
    ));
    // Readers and the endpoint run first, so nothing the probes see is lost
    // and /readyz answers 503 while attaching.
    kernel.attach_tracepoints()?;
    let mut tracer = Tracer { kernel, target, conns: conns.clone(), providers: table.clone(), stats };
    tracer.attach_initial()?;
    if let Some(system) = &exporters.source.system {
        system.refresh();
    }
    // Everything is loaded, attached and opened: drop what is no longer needed.
    crate::privilege::restrict()?;
    ready.store(true, std::sync::atomic::Ordering::Release);
    log::info!(
        "ready after {} ms: tracing {} ({} now) in {} mode ({why}); metrics at http://{}/metrics, live dashboard at http://{4}/",
        started.elapsed().as_millis(),
        tracer.target.describe(),
        tracer.kernel.traced().count(),
        mode.name(),
        config.listen
    );
    for line in storage.iter().map(|s| &s.summary).chain(&exporters.summary) {
        log::info!("{line}");
    }

    let mut library_rescan = tokio::time::interval(LIBRARY_RESCAN);
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = library_rescan.tick() => tracer.attach_late_libraries(),
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let mut events = Vec::new();
                while let Some(item) = guard.get_inner_mut().next() {
                    if item.len() >= size_of::<ProcEvent>() {
                        // SAFETY: the kernel wrote a ProcEvent; read it unaligned.
                        events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ProcEvent>()) });
                    }
                }
                guard.clear_ready();
                for event in events {
                    tracer.handle(event);
                }
            }
        }
    }
    log::info!("stopping: detaching from {} processes", tracer.kernel.traced().count());
    tracer.kernel.detach_all();
    drop(tracer);
    resolver.abort();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(1), live_task).await;
    if let Some(audit) = audit {
        let _ = tokio::time::timeout(Duration::from_secs(5), audit).await;
    }
    // The bus closes once its last sender is gone: storage then flushes what it holds.
    drop(records);
    if let Some(storage) = storage {
        storage.maintenance.abort();
        if tokio::time::timeout(Duration::from_secs(25), storage.writer).await.is_err() {
            log::warn!("storage did not finish its last flush within 25 s");
        }
    }
    exporters.finish().await;
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(_) => {}
        Err(_) => log::warn!("the metrics endpoint did not stop within 5 s"),
    }
    log::info!("detached");
    Ok(())
}

/// Aborts a background task when dropped (the heap trimmer ends with `run`).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
