//! Streaming execution of a [`Plan`]: the header is written first, then every tensor is read
//! in row chunks, transformed, quantized in parallel and written strictly in order.
//!
//! This module owns the pipeline (jobs, the bounded windows between stages, the writer, the
//! hashers, progress and cancel); what a worker does with one job is in `produce`. Memory
//! stays at about `threads × chunk` plus the hashing budget: no tensor is ever held whole.
//! Output bytes do not depend on the thread count or chunk size, because every chunk is a
//! whole number of rows and rows are quantized independently.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::gguf::{Array, GgmlType, GgufFileWriter, TensorSpec, Value};

use super::plan::{Input, Plan, TensorSource, KEY_TENSOR_SHA256};
use super::produce::{DqSlot, Scratch, Worker};
use super::ConvertError;

/// Called after each written chunk with (tensor-data bytes written, total); returning `false`
/// cancels the run. Runs on the writer thread, so it should be quick.
pub type ProgressFn = dyn Fn(u64, u64) -> bool + Send + Sync;

/// Execution settings.
#[derive(Clone)]
pub struct RunOptions {
    /// Worker threads (0 = all cores).
    pub threads: usize,
    /// Target elements per chunk (rounded to whole rows, at least one row).
    pub chunk_elements: usize,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Progress callback (see [`ProgressFn`]).
    pub on_progress: Option<Arc<ProgressFn>>,
    /// Set from any thread to stop the run: it ends with [`ConvertError::Cancelled`] and
    /// leaves nothing under the output name.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("threads", &self.threads)
            .field("chunk_elements", &self.chunk_elements)
            .field("progress", &self.progress)
            .field("on_progress", &self.on_progress.is_some())
            .field("cancel", &self.cancel)
            .finish()
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            threads: 0,
            chunk_elements: 1 << 20,
            progress: false,
            on_progress: None,
            cancel: None,
        }
    }
}

impl RunOptions {
    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub tensors: usize,
    pub data_bytes: u64,
    pub sha256: Vec<[u8; 32]>,
    pub seconds: f64,
}

fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// One unit of work: output rows `[r0, r1)` of tensor `tensor` (for the NF4_DQ state
/// companion: the whole state).
#[derive(Clone, Copy, Debug)]
pub(super) struct Job {
    pub(super) tensor: usize,
    pub(super) r0: usize,
    pub(super) r1: usize,
    /// The job ends its tensor.
    pub(super) last: bool,
}

/// A produced chunk: output bytes of its own, or (the copy path) the source's mapped bytes.
pub(super) enum Chunk<'a> {
    Owned(Vec<u8>),
    Mapped(&'a [u8]),
}

impl std::ops::Deref for Chunk<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Mapped(s) => s,
        }
    }
}

/// A counting semaphore over amounts (chunks, or bytes) that can be closed (waiters then give
/// up): it bounds what is in flight between two pipeline stages, so memory stays bounded
/// whatever the model size.
struct Window {
    free: std::sync::Mutex<(usize, bool)>,
    cv: std::sync::Condvar,
    capacity: usize,
}

impl Window {
    fn new(capacity: usize) -> Window {
        Window {
            free: std::sync::Mutex::new((capacity, false)),
            cv: std::sync::Condvar::new(),
            capacity,
        }
    }
    /// Take `n` (an amount above the capacity waits for all of it); `false` once closed.
    fn acquire(&self, n: usize) -> bool {
        let n = n.min(self.capacity);
        let mut g = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while g.0 < n && !g.1 {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        if g.1 {
            return false;
        }
        g.0 -= n;
        true
    }
    fn release(&self, n: usize) {
        let n = n.min(self.capacity);
        self.free.lock().unwrap_or_else(|e| e.into_inner()).0 += n;
        self.cv.notify_all();
    }
    fn close(&self) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.cv.notify_all();
    }
}

/// Bytes written but not yet hashed, per hashing thread: mapped source pages or output
/// buffers held until their hash is taken.
const HASH_BUDGET_PER_THREAD: usize = 48 << 20;

/// Closes the windows if a pipeline thread unwinds, so no other thread waits forever.
struct CloseOnPanic<'a>(&'a [&'a Window], &'a AtomicBool);

impl Drop for CloseOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.1.store(true, Ordering::Relaxed);
            self.0.iter().for_each(|w| w.close());
        }
    }
}

/// Time spent per stage, summed over threads (`QFORGE_PROFILE=1` prints it).
#[derive(Default)]
pub(super) struct StageTimes {
    pub(super) produce_ns: AtomicU64,
    pub(super) write_ns: AtomicU64,
    pub(super) writer_wait_ns: AtomicU64,
    pub(super) hash_ns: AtomicU64,
}

impl StageTimes {
    pub(super) fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Run `plan` over `input`, writing `out` atomically (a temp file renamed at the end).
///
/// The pipeline: `threads` workers claim jobs (row chunks of every tensor, in file order,
/// across tensor boundaries) from one counter and produce them without waiting for each
/// other; the calling thread writes the chunks strictly in order; after writing, each chunk
/// goes to a hashing thread (tensor `i` to thread `i mod n`, so a tensor's chunks are hashed
/// in order) which also drops the source pages no later chunk needs. At most `window` chunks
/// are between a worker and the writer, so memory is bounded by threads × chunk whatever the
/// model size, and the output bytes never depend on the thread count.
pub fn execute(
    plan: &Plan,
    input: &Input,
    out: &Path,
    opts: &RunOptions,
) -> Result<RunReport, ConvertError> {
    let target = Target {
        path: out.to_path_buf(),
        metadata: plan.metadata.clone(),
        tensors: 0..plan.tensors.len(),
    };
    run_pipeline(plan, input, &[target], opts)
}

/// [`execute`] into a split set as `llama-gguf-split` writes it (see [`crate::split`]):
/// shards `PREFIX-00001-of-0000N.gguf` … cut at `limit`, each carrying its own tensors'
/// hashes. The shards are written under a hidden staging prefix and renamed into place only
/// when all are complete, so a failure leaves no shard under the output names. Returns the
/// shard paths.
pub fn execute_split(
    plan: &Plan,
    input: &Input,
    prefix: &Path,
    limit: crate::split::SplitLimit,
    opts: &RunOptions,
) -> Result<(RunReport, Vec<PathBuf>), ConvertError> {
    use crate::split::{plan_shards_by_size, shard_metadata_for, shard_path};
    let sizes: Vec<u64> = plan.tensors.iter().map(|t| t.n_bytes()).collect();
    let shards = plan_shards_by_size(&sizes, plan.alignment, limit);
    let refuse = |what: String| ConvertError::Plan(format!("{}: {what}", prefix.display()));
    if shards.len() > u16::MAX as usize {
        return Err(refuse(format!(
            "{} shards; GGUF splits hold at most {}",
            shards.len(),
            u16::MAX
        )));
    }
    let total = i32::try_from(plan.tensors.len())
        .map_err(|_| refuse("too many tensors for split.tensors.count".into()))?;
    // the plan's placeholder hashes, cut per shard (patched with the real ones at the end)
    let placeholders = match plan.metadata.get(KEY_TENSOR_SHA256) {
        Some(Value::Array(Array::String(h))) if h.len() == plan.tensors.len() => h.clone(),
        _ => {
            return Err(refuse(format!(
                "the plan has no {KEY_TENSOR_SHA256} placeholder"
            )))
        }
    };
    let staging = crate::split::staging_prefix(prefix);
    let targets = shards
        .iter()
        .enumerate()
        .map(|(i, range)| {
            let path = shard_path(&staging, i, shards.len());
            shard_metadata_for(
                &plan.metadata,
                i,
                shards.len(),
                total,
                Some(&placeholders),
                range,
            )
            .map(|metadata| Target {
                path,
                metadata,
                tensors: range.clone(),
            })
            .map_err(|e| ConvertError::output(prefix, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let report = run_pipeline(plan, input, &targets, opts)?;
    let staged: Vec<PathBuf> = targets.iter().map(|t| t.path.clone()).collect();
    let finals: Vec<PathBuf> = (0..shards.len())
        .map(|i| shard_path(prefix, i, shards.len()))
        .collect();
    crate::split::commit_staged(&staged, &finals).map_err(ConvertError::Plan)?;
    Ok((report, finals))
}

/// One output file: where it is written (atomically), its header's metadata (with a
/// placeholder hash list for its own tensors) and the plan's tensors it holds, in order.
struct Target {
    path: PathBuf,
    metadata: crate::gguf::Metadata,
    tensors: std::ops::Range<usize>,
}

/// The pipeline behind [`execute`] and [`execute_split`]: `targets` cover the plan's tensors
/// in order; all of them are finished (renamed to their paths) only if the run succeeds, and
/// on failure none is left.
fn run_pipeline(
    plan: &Plan,
    input: &Input,
    targets: &[Target],
    opts: &RunOptions,
) -> Result<RunReport, ConvertError> {
    let start = Instant::now();
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let jobs = plan_jobs(plan, opts.chunk_elements)?;
    // the NF4_DQ tensor each state companion belongs to
    let dq_owner = nf4_owners(plan)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| ConvertError::Plan(format!("cannot start {threads} threads: {e}")))?;
    let mut writers = Vec::with_capacity(targets.len());
    let mut target_of = vec![0usize; plan.tensors.len()];
    for (i, target) in targets.iter().enumerate() {
        let specs: Vec<TensorSpec> = plan.tensors[target.tensors.clone()]
            .iter()
            .map(|t| TensorSpec {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ty: t.ty,
            })
            .collect();
        let mut writer =
            GgufFileWriter::create(&target.path, &target.metadata, &specs, plan.alignment)
                .map_err(|e| ConvertError::output(&target.path, e))?;
        writer.disable_hashing();
        writers.push(writer);
        target_of[target.tensors.clone()].fill(i);
    }
    let bar = progress_bar(opts.progress, plan.data_bytes());
    let total = plan.data_bytes();
    let window = Window::new(2 * threads + 2);
    // Raised by a cancelling callback, `opts.cancel`, an error or a panic.
    let stop = AtomicBool::new(opts.cancelled());
    let next_job = AtomicUsize::new(0);
    let dq_slots: Vec<std::sync::Mutex<DqSlot>> = plan
        .tensors
        .iter()
        .map(|_| std::sync::Mutex::new(DqSlot::Empty))
        .collect();
    // output buffers handed back by the hashers for the workers to reuse: fresh memory is
    // slow to back, and a chunk's buffer is the same size as the next one's
    let buffers: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
    let times = StageTimes::default();
    let n_hash = threads.clamp(1, 8);
    let hash_budget = Window::new(HASH_BUDGET_PER_THREAD * n_hash);

    let ctx = Worker {
        plan,
        input,
        jobs: &jobs,
        dq_owner: &dq_owner,
        dq_slots: &dq_slots,
        buffers: &buffers,
        pool: &pool,
        times: &times,
        lookahead: 2 * threads + 2,
    };
    let result = std::thread::scope(|s| {
        let (done_tx, done_rx) =
            std::sync::mpsc::channel::<(usize, Result<Chunk<'_>, ConvertError>)>();
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let (window, stop, next_job, ctx) = (&window, &stop, &next_job, &ctx);
            s.spawn(move || {
                let _guard = CloseOnPanic(&[window], stop);
                let mut scratch = Scratch::default();
                // Every claimed job is finished and sent (the writer waits for jobs in
                // order, and all claimed jobs precede any unclaimed one).
                while !stop.load(Ordering::Relaxed) && !opts.cancelled() && window.acquire(1) {
                    if stop.load(Ordering::Relaxed) || opts.cancelled() {
                        break;
                    }
                    let k = next_job.fetch_add(1, Ordering::Relaxed);
                    if k >= ctx.jobs.len() {
                        break;
                    }
                    ctx.read_ahead(k + ctx.lookahead);
                    let t0 = Instant::now();
                    let chunk = ctx.produce(k, &mut scratch);
                    StageTimes::add(&ctx.times.produce_ns, t0);
                    // after an error no new job is claimed: the writer reports the first
                    // failing job in file order (every job before it is claimed, so done)
                    let failed = chunk.is_err();
                    if failed {
                        stop.store(true, Ordering::Relaxed);
                    }
                    if done_tx.send((k, chunk)).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut hash_tx = Vec::with_capacity(n_hash);
        let mut hashers = Vec::with_capacity(n_hash);
        for _ in 0..n_hash {
            let (htx, hrx) = std::sync::mpsc::channel::<(Job, Chunk<'_>)>();
            hash_tx.push(htx);
            let (window, stop, ctx, hash_budget) = (&window, &stop, &ctx, &hash_budget);
            hashers.push(s.spawn(move || {
                let _guard = CloseOnPanic(&[window, hash_budget], stop);
                let mut open: std::collections::HashMap<usize, Sha256> = Default::default();
                let mut done = Vec::new();
                for (job, bytes) in hrx {
                    let t0 = Instant::now();
                    open.entry(job.tensor).or_default().update(&*bytes);
                    StageTimes::add(&ctx.times.hash_ns, t0);
                    ctx.release_source(job);
                    if job.last {
                        let h = open.remove(&job.tensor).unwrap_or_default();
                        done.push((job.tensor, <[u8; 32]>::from(h.finalize())));
                    }
                    hash_budget.release(bytes.len());
                    if let Chunk::Owned(v) = bytes {
                        ctx.give_back(v);
                    }
                }
                done
            }));
        }
        // a panic on this thread (e.g. in a progress callback) must not leave the workers
        // waiting for window slots the writer would have freed
        let _guard = CloseOnPanic(&[&window], &stop);
        let written = (|| -> Result<(), ConvertError> {
            let mut pending: std::collections::BTreeMap<usize, Result<Chunk<'_>, ConvertError>> =
                Default::default();
            let mut done_bytes = 0u64;
            for (k, job) in jobs.iter().enumerate() {
                let t0 = Instant::now();
                let chunk = loop {
                    if let Some(c) = pending.remove(&k) {
                        break c;
                    }
                    match done_rx.recv() {
                        Ok((i, c)) if i == k => break c,
                        Ok((i, c)) => {
                            pending.insert(i, c);
                        }
                        // every worker has stopped before producing job k: cancelled
                        Err(_) => return Err(ConvertError::Cancelled),
                    }
                };
                StageTimes::add(&times.writer_wait_ns, t0);
                let chunk = chunk?;
                let t0 = Instant::now();
                let w = target_of[job.tensor];
                writers[w]
                    .write_tensor_data(&chunk)
                    .map_err(|e| ConvertError::output(&targets[w].path, e))?;
                StageTimes::add(&times.write_ns, t0);
                window.release(1);
                done_bytes += chunk.len() as u64;
                if job.last {
                    if let Some(owner) = dq_owner[job.tensor] {
                        // the state companion is out: the owner's block data is not needed
                        *dq_slots[owner].lock().unwrap_or_else(|e| e.into_inner()) = DqSlot::Empty;
                    }
                }
                if let Some(b) = &bar {
                    b.inc(chunk.len() as u64);
                }
                if let Some(f) = &opts.on_progress {
                    if !f(done_bytes, total) {
                        return Err(ConvertError::Cancelled);
                    }
                }
                if opts.cancelled() {
                    return Err(ConvertError::Cancelled);
                }
                // The writer runs ahead of the hashers by up to the budget, so a slow hash
                // of one tensor does not hold up the writing (or the hashing of the next).
                if !hash_budget.acquire(chunk.len()) {
                    return Err(ConvertError::Cancelled); // closed: a hasher unwound
                }
                // a hasher only goes away if the scope is unwinding
                let _ = hash_tx[job.tensor % n_hash].send((*job, chunk));
            }
            Ok(())
        })();
        if written.is_err() {
            stop.store(true, Ordering::Relaxed);
            window.close();
        }
        drop(done_rx);
        drop(hash_tx);
        let mut hashes = vec![<[u8; 32]>::from(Sha256::digest([])); plan.tensors.len()];
        for h in hashers {
            for (i, d) in h.join().expect("a hashing thread does not panic") {
                hashes[i] = d;
            }
        }
        written.map(|()| hashes)
    });
    if std::env::var_os("QFORGE_PROFILE").is_some() {
        let secs = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
        eprintln!(
            "profile: wall {:.3}s; produce {:.3}s over {threads} workers; write {:.3}s \
             (writer waited {:.3}s for chunks); hash {:.3}s over {n_hash} threads",
            start.elapsed().as_secs_f64(),
            secs(&times.produce_ns),
            secs(&times.write_ns),
            secs(&times.writer_wait_ns),
            secs(&times.hash_ns),
        );
    }
    let hashes = result?; // on error the unfinished writers delete their temp files
    let hex_hashes: Vec<String> = hashes.iter().map(hex).collect();
    for (writer, target) in writers.iter_mut().zip(targets) {
        let own = Value::Array(Array::String(hex_hashes[target.tensors.clone()].to_vec()));
        writer
            .patch_value(KEY_TENSOR_SHA256, &own)
            .map_err(|e| ConvertError::output(&target.path, e))?;
    }
    let mut finished: Vec<&Path> = Vec::with_capacity(writers.len());
    for (writer, target) in writers.into_iter().zip(targets) {
        if let Err(e) = writer.finish() {
            // the others are deleted as their writers drop; the finished ones here
            finished.iter().for_each(|p| {
                let _ = std::fs::remove_file(p);
            });
            return Err(ConvertError::output(&target.path, e));
        }
        finished.push(&target.path);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(RunReport {
        tensors: plan.tensors.len(),
        data_bytes: plan.data_bytes(),
        sha256: hashes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Every tensor's row chunks, in file order. A chunk is a whole number of rows of about
/// `chunk_elements` elements; the NF4_DQ state companion is one job.
fn plan_jobs(plan: &Plan, chunk_elements: usize) -> Result<Vec<Job>, ConvertError> {
    let mut jobs = Vec::new();
    for (i, t) in plan.tensors.iter().enumerate() {
        let n_rows = t.n_rows();
        if matches!(t.source, TensorSource::Nf4DqState) || n_rows == 0 {
            jobs.push(Job {
                tensor: i,
                r0: 0,
                r1: n_rows,
                last: true,
            });
            continue;
        }
        let rows_per_chunk = (chunk_elements / t.row_len().max(1)).max(1);
        let mut r0 = 0;
        while r0 < n_rows {
            let r1 = (r0 + rows_per_chunk).min(n_rows);
            jobs.push(Job {
                tensor: i,
                r0,
                r1,
                last: r1 == n_rows,
            });
            r0 = r1;
        }
    }
    Ok(jobs)
}

/// For each NF4_DQ state companion, the NF4_DQ tensor before it.
fn nf4_owners(plan: &Plan) -> Result<Vec<Option<usize>>, ConvertError> {
    let mut last_dq = None;
    plan.tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if let GgmlType::Nf4Dq { .. } = t.ty {
                last_dq = Some(i);
            }
            match t.source {
                TensorSource::Nf4DqState => last_dq.take().map(Some).ok_or_else(|| {
                    ConvertError::Plan(format!("tensor '{}': no NF4_DQ tensor before it", t.name))
                }),
                _ => Ok(None),
            }
        })
        .collect()
}

fn progress_bar(enabled: bool, total: u64) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template"),
    );
    Some(bar)
}
