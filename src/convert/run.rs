//! Streaming execution of a [`Plan`]: the header is written first, then every tensor is read
//! in row chunks, transformed, quantized in parallel and written strictly in order.
//!
//! Memory stays at about `threads × chunk` (plus the output bytes of one wave of chunks): no
//! tensor is ever held whole. Output bytes do not depend on the thread count, because every
//! chunk is a whole number of rows and rows are quantized independently.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use sha2::{Digest, Sha256};

use crate::arch::{Transform, ValueOp};
use crate::gguf::{Array, GgmlType, GgufFileWriter, TensorSpec, Value};
use crate::quant;
use crate::source::SourceDtype;

use super::plan::{Input, Plan, PlannedTensor, TensorSource, KEY_TENSOR_SHA256};
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
struct Job {
    tensor: usize,
    r0: usize,
    r1: usize,
    /// The job ends its tensor.
    last: bool,
}

/// A produced chunk: output bytes of its own, or (the copy path) the source's mapped bytes.
enum Chunk<'a> {
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

/// NF4 with double quantization needs every block's absmax before the first block can be
/// written (the offset is their mean); computed once per tensor by the first worker to need
/// it, dropped when the state companion has been written.
enum DqSlot {
    Empty,
    Ready(Arc<DqData>),
    Failed(String),
}

struct DqData {
    absmax: Vec<f32>,
    codes: Vec<u8>,
    state: Vec<f32>,
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
struct StageTimes {
    produce_ns: AtomicU64,
    write_ns: AtomicU64,
    writer_wait_ns: AtomicU64,
    hash_ns: AtomicU64,
}

impl StageTimes {
    fn add(counter: &AtomicU64, since: Instant) {
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

/// A worker's reusable buffers.
#[derive(Default)]
struct Scratch {
    values: Vec<f32>,
    half: Vec<u8>,
}

/// What the pipeline threads share.
struct Worker<'a> {
    plan: &'a Plan,
    input: &'a Input,
    jobs: &'a [Job],
    dq_owner: &'a [Option<usize>],
    dq_slots: &'a [std::sync::Mutex<DqSlot>],
    buffers: &'a std::sync::Mutex<Vec<Vec<u8>>>,
    pool: &'a rayon::ThreadPool,
    times: &'a StageTimes,
    lookahead: usize,
}

impl<'a> Worker<'a> {
    fn take_buffer(&self, n: usize) -> Vec<u8> {
        let mut v = self
            .buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        // callers overwrite every byte; a reused buffer of the same length needs no clearing
        v.resize(n, 0);
        v
    }

    fn give_back(&self, v: Vec<u8>) {
        let mut b = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() < 64 {
            b.push(v);
        }
    }

    /// Start reading job `k`'s source from disk before a worker needs it.
    fn read_ahead(&self, k: usize) {
        let (Some(job), Input::Checkpoint(ck)) = (self.jobs.get(k), self.input) else {
            return;
        };
        let t = &self.plan.tensors[job.tensor];
        if let TensorSource::Safetensors(src) = &t.source {
            // a row permutation stays within a head, so the chunk's rows widened to whole
            // heads cover it; the plain case is exactly the chunk
            let n_rows = t.n_rows();
            let a = t.transform.source_rows_done(job.r0, n_rows);
            let b = if job.r1 == n_rows {
                n_rows
            } else {
                t.transform.source_rows_done(job.r1, n_rows).max(job.r1)
            };
            ck.will_need(src, a * t.row_len(), b * t.row_len());
        }
    }

    /// Drop the source pages that no chunk after `job` needs (called once `job` is written
    /// and hashed; a tensor's jobs arrive in order).
    fn release_source(&self, job: Job) {
        let t = &self.plan.tensors[job.tensor];
        let n_rows = t.n_rows();
        match (self.input, &t.source) {
            (Input::Checkpoint(ck), TensorSource::Safetensors(src)) => {
                if job.last {
                    ck.release(src);
                } else {
                    let rows = t.transform.source_rows_done(job.r1, n_rows);
                    ck.release_prefix(src, rows * t.row_len());
                }
            }
            (Input::Checkpoint(ck), TensorSource::Stacked(parts)) => {
                // experts finished by this chunk (not those released by earlier chunks)
                let per = (n_rows / parts.len().max(1)).max(1);
                let before = t.transform.source_rows_done(job.r0, n_rows) / per;
                let now = if job.last {
                    parts.len()
                } else {
                    (t.transform.source_rows_done(job.r1, n_rows) / per).min(parts.len())
                };
                parts[before.min(now)..now]
                    .iter()
                    .for_each(|p| ck.release(p));
            }
            (Input::Gguf(g), TensorSource::Gguf { index, .. }) => {
                if job.last {
                    g.release(*index);
                } else {
                    // rows are stored in order (GGUF sources have no row permutation)
                    let row_bytes = g.tensors()[*index]
                        .ty
                        .bytes_for(t.row_len() as u64)
                        .unwrap_or(0);
                    g.release_prefix(*index, job.r1 as u64 * row_bytes);
                }
            }
            _ => {}
        }
    }

    /// Output bytes of job `k`.
    fn produce(&self, k: usize, scratch: &mut Scratch) -> Result<Chunk<'a>, ConvertError> {
        let job = self.jobs[k];
        let t = &self.plan.tensors[job.tensor];
        if let TensorSource::Nf4DqState = t.source {
            let owner = self.dq_owner[job.tensor].expect("checked by nf4_owners");
            let dq = self.dq(owner)?;
            let mut bytes = self.take_buffer(dq.state.len() * 4);
            quant::float::f32_to_le_bytes(&dq.state, &mut bytes);
            return Ok(Chunk::Owned(bytes));
        }
        if let Some(chunk) = self.copy_rows(t, job.r0, job.r1)? {
            return Ok(chunk);
        }
        let dq = match t.ty {
            GgmlType::Nf4Dq { .. } => Some(self.dq(job.tensor)?),
            _ => None,
        };
        let out = self.quantize_rows(t, job.r0, job.r1, dq.as_deref(), scratch)?;
        Ok(Chunk::Owned(out))
    }

    /// The whole-tensor NF4_DQ data of tensor `i`, computed by the first worker to ask.
    fn dq(&self, i: usize) -> Result<Arc<DqData>, ConvertError> {
        let mut slot = self.dq_slots[i].lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            DqSlot::Ready(d) => return Ok(d.clone()),
            DqSlot::Failed(msg) => return Err(ConvertError::Plan(msg.clone())),
            DqSlot::Empty => {}
        }
        let t = &self.plan.tensors[i];
        let GgmlType::Nf4Dq { block } = t.ty else {
            unreachable!("dq is asked only for NF4_DQ tensors")
        };
        let rows_per_chunk = ((1usize << 20) / t.row_len().max(1)).max(1);
        let chunks: Vec<(usize, usize)> = (0..t.n_rows())
            .step_by(rows_per_chunk)
            .map(|r0| (r0, (r0 + rows_per_chunk).min(t.n_rows())))
            .collect();
        let absmax: Result<Vec<Vec<f32>>, ConvertError> = self.pool.install(|| {
            chunks
                .par_iter()
                .map(|&(r0, r1)| {
                    let mut v = Vec::new();
                    source_rows(t, self.input, r0, r1, &mut v)?;
                    Ok(quant::nf4::block_absmax(&v, block as usize))
                })
                .collect()
        });
        match absmax {
            Ok(parts) => {
                let absmax: Vec<f32> = parts.concat();
                let (state, codes) = quant::nf4::double_quantize(&absmax);
                let d = Arc::new(DqData {
                    absmax,
                    codes,
                    state: state.to_values(),
                });
                *slot = DqSlot::Ready(d.clone());
                Ok(d)
            }
            Err(e) => {
                *slot = DqSlot::Failed(e.to_string());
                Err(e)
            }
        }
    }

    /// When the output type is the source's own type, rows are copied as bytes (still
    /// checked for NaN and infinity): f16 → f32 → f16 and the like are exact round trips,
    /// and a GGUF tensor kept in its type is left as it is (as llama-quantize does). Rows
    /// in source order are not copied at all: the chunk is the mapped source bytes, which
    /// the writer writes and the hasher reads in place. `None` when a conversion is needed.
    fn copy_rows(
        &self,
        t: &PlannedTensor,
        r0: usize,
        r1: usize,
    ) -> Result<Option<Chunk<'a>>, ConvertError> {
        if t.f16_intermediate || t.values != ValueOp::None {
            return Ok(None);
        }
        let ck = match (&t.source, self.input) {
            (TensorSource::Gguf { index, .. }, Input::Gguf(g)) => {
                let info = &g.tensors()[*index];
                if info.ty != t.ty || matches!(t.ty, GgmlType::Nf4Dq { .. }) {
                    return Ok(None);
                }
                let row_bytes = t.ty.bytes_for(t.row_len() as u64).expect("planned type") as usize;
                let data = g.tensor_data(*index);
                let bytes = &data[r0 * row_bytes..r1 * row_bytes];
                if let Some(i) = quant::float::first_non_finite_bytes(t.ty, bytes) {
                    let mut v = [0f32; 1];
                    let row_len = t.row_len();
                    let mut row = vec![0f32; row_len];
                    gguf_row_f32(g, *index, None, r0 + i / row_len, &mut row)?;
                    v[0] = row[i % row_len];
                    return Err(non_finite(t, r0, i, v[0], "in the source"));
                }
                return Ok(Some(Chunk::Mapped(bytes)));
            }
            (_, Input::Checkpoint(ck)) => ck,
            _ => return Ok(None),
        };
        let Some((first, _)) = t.source_part(0) else {
            return Ok(None);
        };
        let dtype = first.dtype;
        let same = matches!(
            (dtype, t.ty),
            (SourceDtype::F16, GgmlType::F16)
                | (SourceDtype::Bf16, GgmlType::Bf16)
                | (SourceDtype::F32, GgmlType::F32)
        );
        if !same {
            return Ok(None);
        }
        let size = dtype.size();
        let row_len = t.row_len();
        let row_bytes = row_len * size;
        let n_rows = t.n_rows();
        let chunk = match (&t.source, t.transform) {
            (TensorSource::Safetensors(src), Transform::None) => {
                Chunk::Mapped(&ck.bytes(src)[r0 * row_bytes..r1 * row_bytes])
            }
            _ => {
                let mut out = self.take_buffer(0);
                out.reserve((r1 - r0) * row_bytes); // filled by extend_from_slice below
                for r in r0..r1 {
                    let (src, s) = t
                        .source_part(t.transform.source_row(r, n_rows))
                        .expect("rows of the planned source");
                    if src.dtype != dtype {
                        // stacked parts of mixed dtypes: the converting path handles them
                        self.give_back(out);
                        return Ok(None);
                    }
                    out.extend_from_slice(&ck.bytes(src)[s * row_bytes..(s + 1) * row_bytes]);
                }
                Chunk::Owned(out)
            }
        };
        if let Some(i) = quant::float::first_non_finite_bytes(t.ty, &chunk) {
            let mut v = [0f32; 1];
            let (src, s) = t
                .source_part(t.transform.source_row(r0 + i / row_len, n_rows))
                .expect("rows of the planned source");
            ck.read_f32(src, s * row_len + i % row_len, &mut v);
            return Err(non_finite(t, r0, i, v[0], "in the source"));
        }
        Ok(Some(chunk))
    }

    /// Output bytes of rows `[r0, r1)` of tensor `t`, converted and quantized. `dq`
    /// carries the whole tensor's block absmax values and 8-bit codes for NF4_DQ.
    fn quantize_rows(
        &self,
        t: &PlannedTensor,
        r0: usize,
        r1: usize,
        dq: Option<&DqData>,
        scratch: &mut Scratch,
    ) -> Result<Vec<u8>, ConvertError> {
        let values = &mut scratch.values;
        source_rows(t, self.input, r0, r1, values)?;
        if t.f16_intermediate {
            // llama.cpp quantizes from our f16 file: round through f16 the same way.
            let half = &mut scratch.half;
            half.resize(values.len() * 2, 0); // overwritten by the quantizer
            quant::quantize(GgmlType::F16, values, half).expect("finite values");
            quant::dequantize(GgmlType::F16, half, values).expect("lengths match");
            if let Some((i, v)) = quant::first_non_finite(values) {
                return Err(non_finite(
                    t,
                    r0,
                    i,
                    v,
                    "after rounding to f16 (beyond f16's range)",
                ));
            }
        }
        let n_bytes =
            t.ty.bytes_for(values.len() as u64)
                .expect("whole rows of a planned type") as usize;
        let mut out = self.take_buffer(n_bytes);
        let quant_err = |e| ConvertError::Quant {
            tensor: t.name.clone(),
            source: e,
        };
        match (t.ty, dq) {
            (GgmlType::Nf4Dq { block }, Some(dq)) => {
                let b0 = r0 * t.row_len() / block as usize;
                let nb = values.len() / block as usize;
                quant::nf4::quantize_nf4_dq(
                    values,
                    block as usize,
                    &dq.codes[b0..b0 + nb],
                    &dq.absmax[b0..b0 + nb],
                    &mut out,
                );
            }
            _ => match &t.importance {
                // ggml's weighted quantizers, row by row with the row's (expert's) weights
                Some(imp) => {
                    let row_len = t.row_len();
                    let rows_per_expert = t.dims.get(1).copied().unwrap_or(1).max(1) as usize;
                    let row_bytes = n_bytes / (r1 - r0);
                    for (k, (x, o)) in values
                        .chunks_exact(row_len)
                        .zip(out.chunks_exact_mut(row_bytes))
                        .enumerate()
                    {
                        let e = (r0 + k) / rows_per_expert;
                        let qw = &imp[e * row_len..(e + 1) * row_len];
                        quant::weighted::quantize_weighted(t.ty, x, qw, o).map_err(quant_err)?;
                    }
                }
                None => quant::quantize_prechecked(t.ty, values, &mut out).map_err(quant_err)?,
            },
        }
        Ok(out)
    }
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

/// Source values of rows `[r0, r1)` of tensor `t` (after the row transform), checked finite.
fn source_rows(
    t: &PlannedTensor,
    input: &Input,
    r0: usize,
    r1: usize,
    values: &mut Vec<f32>,
) -> Result<(), ConvertError> {
    let row_len = t.row_len();
    let n_rows = t.n_rows();
    // every element is overwritten: resizing a reused buffer to the same length is free
    values.resize((r1 - r0) * row_len, 0.0);
    for (i, row) in values.chunks_exact_mut(row_len).enumerate() {
        let src_row = t.transform.source_row(r0 + i, n_rows);
        read_source_row(t, input, src_row, row)?;
    }
    if let Some((i, v)) = quant::first_non_finite(values) {
        return Err(non_finite(t, r0, i, v, "in the source"));
    }
    Ok(())
}

fn non_finite(t: &PlannedTensor, r0: usize, index: usize, value: f32, what: &str) -> ConvertError {
    let row_len = t.row_len();
    let row = t.transform.source_row(r0 + index / row_len, t.n_rows());
    ConvertError::NonFinite {
        tensor: t.name.clone(),
        index: row as u64 * row_len as u64 + (index % row_len) as u64,
        value,
        what: what.to_string(),
    }
}

/// Read source row `row` of `t` as f32.
pub(crate) fn read_source_row(
    t: &PlannedTensor,
    input: &Input,
    row: usize,
    out: &mut [f32],
) -> Result<(), ConvertError> {
    let row_len = out.len();
    match (&t.source, input) {
        (TensorSource::Safetensors(_) | TensorSource::Stacked(_), Input::Checkpoint(ck)) => {
            let (src, row) = t.source_part(row).ok_or_else(|| {
                ConvertError::Plan(format!("tensor '{}': row {row} out of range", t.name))
            })?;
            ck.read_f32(src, row * row_len, out);
            match t.values {
                ValueOp::None => {}
                ValueOp::AddOne if src.dtype == SourceDtype::F16 => out
                    .iter_mut()
                    .for_each(|v| *v = half::f16::from_f32(*v + 1.0).to_f32()),
                ValueOp::AddOne => out.iter_mut().for_each(|v| *v += 1.0),
            }
            Ok(())
        }
        (TensorSource::Gguf { index, dq }, Input::Gguf(g)) => {
            gguf_row_f32(g, *index, dq.as_deref(), row, out)
        }
        (TensorSource::Generated(values), _) => {
            out.copy_from_slice(&values[row * row_len..(row + 1) * row_len]);
            Ok(())
        }
        (TensorSource::Nf4DqState, _) | (_, _) => Err(ConvertError::Plan(format!(
            "tensor '{}': source does not match the input",
            t.name
        ))),
    }
}

/// One tensor of a GGUF file read back as f32 one row at a time, for every type qforge reads.
/// An NF4_DQ tensor's state tensor is loaded once when the reader is made, so a caller never
/// holds more than the rows it asks for.
pub(crate) struct GgufRows<'a> {
    file: &'a crate::gguf::GgufFile,
    index: usize,
    dq: Option<quant::nf4::DqState>,
    row_len: usize,
    rows: usize,
}

impl<'a> GgufRows<'a> {
    /// A reader of tensor `index` of `file` (which must exist), in ggml order: rows of
    /// `dims[0]` values.
    pub(crate) fn new(file: &'a crate::gguf::GgufFile, index: usize) -> Result<Self, ConvertError> {
        let info = &file.tensors()[index];
        let row_len = info.dims.first().copied().unwrap_or(1).max(1) as usize;
        Ok(GgufRows {
            file,
            index,
            dq: super::plan::dq_state_of(file, index)?,
            row_len,
            rows: (info.n_elements() / row_len as u64) as usize,
        })
    }

    /// Values in one row.
    pub(crate) fn row_len(&self) -> usize {
        self.row_len
    }

    /// Rows in the tensor.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Row `row` into `out`, which holds one row.
    pub(crate) fn read(&self, row: usize, out: &mut [f32]) -> Result<(), ConvertError> {
        gguf_row_f32(self.file, self.index, self.dq.as_ref(), row, out)
    }
}

/// Row `row` of GGUF tensor `index` as f32, for every type qforge reads (NF4_DQ needs its
/// state).
pub(crate) fn gguf_row_f32(
    g: &crate::gguf::GgufFile,
    index: usize,
    dq: Option<&quant::nf4::DqState>,
    row: usize,
    out: &mut [f32],
) -> Result<(), ConvertError> {
    let info = &g.tensors()[index];
    let row_len = out.len();
    let row_bytes = info
        .ty
        .bytes_for(row_len as u64)
        .expect("validated by the reader") as usize;
    let bytes = &g.tensor_data(index)[row * row_bytes..(row + 1) * row_bytes];
    let err = |e| ConvertError::Quant {
        tensor: info.name.clone(),
        source: e,
    };
    match (info.ty, dq) {
        (GgmlType::Nf4Dq { block }, Some(state)) => quant::nf4::dequantize_nf4_dq(
            quant::active_isa(),
            bytes,
            block as usize,
            state,
            row * row_len / block as usize,
            out,
        )
        .map_err(err),
        _ => quant::dequantize(info.ty, bytes, out).map_err(err),
    }
}
