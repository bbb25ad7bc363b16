//! The memory allocator's view of the node: jemalloc's own counters as `roost_allocator_*_bytes`
//! (read at each scrape) and heap profiles for `/debug/pprof/heap`.
//!
//! The `roost` binary runs on jemalloc for all of its allocations, RocksDB's C++ ones included
//! (the allocator replaces `malloc` process-wide), so these figures cover the archive too.
//! jemalloc is built with profiling compiled in but off (`prof:true,prof_active:false`, see
//! `.cargo/config.toml`): sampling costs nothing until `http.heap_profile` turns it on.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::gauge::ConstGauge,
    registry::Unit,
};

/// jemalloc's statistics, in bytes (see `man jemalloc`, `stats.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllocatorStats {
    /// Bytes in live allocations.
    pub allocated: u64,
    /// Bytes in active pages (allocated plus page-level fragmentation).
    pub active: u64,
    /// Bytes in physically resident pages the allocator maps, metadata included.
    pub resident: u64,
    /// Bytes in mapped chunks (a superset of resident).
    pub mapped: u64,
    /// Bytes returned to the OS (unmapped or purged) but kept as address space for reuse.
    pub retained: u64,
    /// Bytes of the allocator's own bookkeeping.
    pub metadata: u64,
}

/// Why the allocator could not be read or profiled.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("cannot read jemalloc statistics: {0}")]
    Stats(tikv_jemalloc_ctl::Error),
    #[error(
        "heap profiling is not active: start the node with http.heap_profile = true \
         (ROOST_HTTP_HEAP_PROFILE=true, --http-heap-profile true)"
    )]
    ProfilingOff,
    #[error("jemalloc was built without profiling (tikv-jemalloc-sys feature `profiling`)")]
    ProfilingUnavailable,
    #[error("cannot write the heap profile: {0}")]
    Dump(String),
}

impl AllocatorStats {
    /// Refreshes jemalloc's cached statistics (`epoch`) and reads them.
    pub fn read() -> Result<AllocatorStats, AllocError> {
        use tikv_jemalloc_ctl::{epoch, stats};
        epoch::advance().map_err(AllocError::Stats)?;
        let read = |r: Result<usize, tikv_jemalloc_ctl::Error>| {
            r.map(|v| v as u64).map_err(AllocError::Stats)
        };
        Ok(AllocatorStats {
            allocated: read(stats::allocated::read())?,
            active: read(stats::active::read())?,
            resident: read(stats::resident::read())?,
            mapped: read(stats::mapped::read())?,
            retained: read(stats::retained::read())?,
            metadata: read(stats::metadata::read())?,
        })
    }
}

/// Exports [`AllocatorStats`] as `roost_allocator_<field>_bytes`, read at each scrape.
#[derive(Debug)]
pub struct AllocatorCollector;

impl Collector for AllocatorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = match AllocatorStats::read() {
            Ok(stats) => stats,
            Err(e) => {
                tracing::debug!(error = %e, "allocator statistics left out of /metrics");
                return Ok(());
            }
        };
        let rows = [
            (
                "roost_allocator_allocated",
                "Bytes in live heap allocations (jemalloc stats.allocated)",
                stats.allocated,
            ),
            (
                "roost_allocator_active",
                "Bytes in pages holding live allocations (jemalloc stats.active)",
                stats.active,
            ),
            (
                "roost_allocator_resident",
                "Bytes of allocator pages resident in memory, metadata included (jemalloc stats.resident)",
                stats.resident,
            ),
            (
                "roost_allocator_mapped",
                "Bytes the allocator has mapped (jemalloc stats.mapped)",
                stats.mapped,
            ),
            (
                "roost_allocator_retained",
                "Bytes returned to the OS but kept as address space for reuse (jemalloc stats.retained)",
                stats.retained,
            ),
            (
                "roost_allocator_metadata",
                "Bytes of the allocator's own bookkeeping (jemalloc stats.metadata)",
                stats.metadata,
            ),
        ];
        for (name, help, value) in rows {
            let gauge = ConstGauge::new(value as f64);
            let metric =
                encoder.encode_descriptor(name, help, Some(&Unit::Bytes), gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// Turns heap sampling on (one sample per 512 KiB allocated on average). Called once at start
/// when `http.heap_profile` is set.
pub async fn start_profiling() -> Result<(), AllocError> {
    let ctl = jemalloc_pprof::PROF_CTL
        .as_ref()
        .ok_or(AllocError::ProfilingUnavailable)?;
    let mut ctl = ctl.lock().await;
    ctl.activate()
        .map_err(|e| AllocError::Dump(format!("cannot activate profiling: {e}")))
}

/// What a heap profile is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileFormat {
    /// gzipped pprof protobuf (`pprof -top roost heap.pb.gz`).
    Pprof,
    /// jemalloc's own text dump, for `jeprof` (and `jeprof --base` to diff two dumps).
    Jeprof,
}

/// A heap profile of the live allocations sampled since profiling started.
pub async fn heap_profile(format: ProfileFormat) -> Result<Vec<u8>, AllocError> {
    let ctl = jemalloc_pprof::PROF_CTL
        .as_ref()
        .ok_or(AllocError::ProfilingUnavailable)?;
    let mut ctl = ctl.clone().lock_owned().await;
    if !ctl.activated() {
        return Err(AllocError::ProfilingOff);
    }
    // Dumping walks every sampled stack and reads the binary's mappings: off the async workers.
    tokio::task::spawn_blocking(move || match format {
        ProfileFormat::Pprof => ctl
            .dump_pprof()
            .map_err(|e| AllocError::Dump(e.to_string())),
        ProfileFormat::Jeprof => {
            use std::io::Read;
            let mut file = ctl.dump().map_err(|e| AllocError::Dump(e.to_string()))?;
            let mut out = Vec::new();
            file.read_to_end(&mut out)
                .map_err(|e| AllocError::Dump(e.to_string()))?;
            Ok(out)
        }
    })
    .await
    .map_err(|e| AllocError::Dump(e.to_string()))?
}
