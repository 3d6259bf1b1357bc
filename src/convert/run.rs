//! Streaming execution of a [`Plan`]: the header is written first, then every tensor is read
//! in row chunks, transformed, quantized in parallel and written strictly in order.
//!
//! Memory stays at about `threads × chunk` (plus the output bytes of one wave of chunks): no
//! tensor is ever held whole. Output bytes do not depend on the thread count, because every
//! chunk is a whole number of rows and rows are quantized independently.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use sha2::{Digest, Sha256};

use crate::arch::ValueOp;
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

/// Run `plan` over `input`, writing `out` atomically (a temp file renamed at the end).
pub fn execute(
    plan: &Plan,
    input: &Input,
    out: &Path,
    opts: &RunOptions,
) -> Result<RunReport, ConvertError> {
    let start = Instant::now();
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| ConvertError::Plan(format!("cannot start {threads} threads: {e}")))?;
    let specs: Vec<TensorSpec> = plan
        .tensors
        .iter()
        .map(|t| TensorSpec {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
        })
        .collect();
    let mut writer = GgufFileWriter::create(out, &plan.metadata, &specs, plan.alignment)
        .map_err(|e| ConvertError::output(out, e))?;
    let bar = progress_bar(opts.progress, plan.data_bytes());
    // The writer thread only writes; each written chunk then goes to one of `n_hash` hashing
    // threads (tensor i to thread i mod n_hash, so a tensor's chunks are hashed in order), so
    // SHA-256 runs off the write path and over several tensors at once.
    writer.disable_hashing();
    let sizes: Vec<u64> = plan.tensors.iter().map(|t| t.n_bytes()).collect();
    let n_hash = threads.clamp(1, 8);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2 * threads);
    // Raised by a cancelling callback or `opts.cancel`; every stage checks it between chunks.
    let stop = AtomicBool::new(opts.cancelled());
    let (produced, written, hashes) = std::thread::scope(|s| {
        let bar = &bar;
        let sizes = &sizes;
        let mut hash_tx = Vec::with_capacity(n_hash);
        let mut hashers = Vec::with_capacity(n_hash);
        for _ in 0..n_hash {
            let (htx, hrx) = std::sync::mpsc::sync_channel::<(usize, Vec<u8>)>(4);
            hash_tx.push(htx);
            hashers.push(s.spawn(move || {
                let mut open: std::collections::HashMap<usize, (Sha256, u64)> =
                    std::collections::HashMap::new();
                let mut done = Vec::new();
                for (i, bytes) in hrx {
                    let e = open.entry(i).or_insert_with(|| (Sha256::new(), 0));
                    e.0.update(&bytes);
                    e.1 += bytes.len() as u64;
                    if e.1 == sizes[i] {
                        let (h, _) = open.remove(&i).expect("just used");
                        done.push((i, <[u8; 32]>::from(h.finalize())));
                    }
                }
                done
            }));
        }
        let stop = &stop;
        let total = plan.data_bytes();
        let handle = s.spawn(move || -> Result<GgufFileWriter, ConvertError> {
            let mut done = 0u64;
            for bytes in rx {
                let index = writer.current_tensor();
                writer
                    .write_tensor_data(&bytes)
                    .map_err(|e| ConvertError::output(out, e))?;
                done += bytes.len() as u64;
                if let Some(b) = bar {
                    b.inc(bytes.len() as u64);
                }
                if let Some(f) = &opts.on_progress {
                    if !f(done, total) {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                if stop.load(Ordering::Relaxed) || opts.cancelled() {
                    stop.store(true, Ordering::Relaxed);
                    return Err(ConvertError::Cancelled);
                }
                if let Some(i) = index {
                    // a hasher only stops early if the scope is unwinding
                    let _ = hash_tx[i % n_hash].send((i, bytes));
                }
            }
            Ok(writer)
        });
        let produced = produce_all(plan, input, opts, threads, &pool, &tx, stop);
        drop(tx);
        let written = handle.join().expect("the writer thread does not panic");
        let mut hashes = vec![<[u8; 32]>::from(Sha256::digest([])); plan.tensors.len()];
        for h in hashers {
            for (i, d) in h.join().expect("a hashing thread does not panic") {
                hashes[i] = d;
            }
        }
        (produced, written, hashes)
    });
    if stop.load(Ordering::Relaxed) || opts.cancelled() {
        return Err(ConvertError::Cancelled); // the unfinished writer deletes its temp file
    }
    let mut writer = match (produced, written) {
        (_, Err(e)) => return Err(e),
        (Err(e), Ok(_)) => return Err(e),
        (Ok(()), Ok(w)) => w,
    };
    let hex_hashes: Vec<String> = hashes.iter().map(hex).collect();
    writer
        .patch_value(KEY_TENSOR_SHA256, &Value::Array(Array::String(hex_hashes)))
        .map_err(|e| ConvertError::output(out, e))?;
    writer.finish().map_err(|e| ConvertError::output(out, e))?;
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

/// Compute every tensor's bytes in order and hand them to the writer thread. Returns early
/// (with `Ok`) if the writer has gone away; its own error is reported by the caller.
fn produce_all(
    plan: &Plan,
    input: &Input,
    opts: &RunOptions,
    threads: usize,
    pool: &rayon::ThreadPool,
    tx: &std::sync::mpsc::SyncSender<Vec<u8>>,
    stop: &AtomicBool,
) -> Result<(), ConvertError> {
    // false once the writer has gone away or the run is cancelled
    let send = |bytes: Vec<u8>| -> bool {
        !stop.load(Ordering::Relaxed) && !opts.cancelled() && tx.send(bytes).is_ok()
    };
    // The state of the last NF4_DQ tensor, written as the companion tensor that follows it.
    let mut pending_state: Option<Vec<f32>> = None;
    for t in &plan.tensors {
        if let TensorSource::Nf4DqState = t.source {
            let values = pending_state.take().ok_or_else(|| {
                ConvertError::Plan(format!("tensor '{}': no NF4_DQ tensor before it", t.name))
            })?;
            let mut bytes = vec![0u8; values.len() * 4];
            quant::float::f32_to_le_bytes(&values, &mut bytes);
            if !send(bytes) {
                return Ok(());
            }
            continue;
        }
        let rows_per_chunk = (opts.chunk_elements / t.row_len().max(1)).max(1);
        let n_rows = t.n_rows();
        let chunks: Vec<(usize, usize)> = (0..n_rows)
            .step_by(rows_per_chunk)
            .map(|r0| (r0, (r0 + rows_per_chunk).min(n_rows)))
            .collect();
        // NF4 with double quantization needs every block's absmax before the first block can
        // be written (the offset is their mean): one extra read pass, O(elements / block).
        let dq = match t.ty {
            GgmlType::Nf4Dq { block } => {
                let mut absmax = Vec::with_capacity(t.n_elements() as usize / block as usize);
                for wave in chunks.chunks(threads) {
                    let parts: Vec<Vec<f32>> = pool.install(|| {
                        wave.par_iter()
                            .map(|&(r0, r1)| {
                                let v = source_rows(t, input, r0, r1)?;
                                Ok(quant::nf4::block_absmax(&v, block as usize))
                            })
                            .collect::<Result<Vec<_>, ConvertError>>()
                    })?;
                    parts.into_iter().for_each(|p| absmax.extend(p));
                }
                let (state, codes) = quant::nf4::double_quantize(&absmax);
                pending_state = Some(state.to_values());
                Some((absmax, codes))
            }
            _ => None,
        };
        for wave in chunks.chunks(threads) {
            let produced: Vec<Vec<u8>> = pool.install(|| {
                wave.par_iter()
                    .map(|&(r0, r1)| produce_rows(t, input, r0, r1, dq.as_ref()))
                    .collect::<Result<Vec<_>, _>>()
            })?;
            for bytes in produced {
                if !send(bytes) {
                    return Ok(());
                }
            }
            // Resident memory must not grow with the tensor: drop the source pages that no
            // later chunk needs.
            if let Input::Checkpoint(ck) = input {
                let done_rows = wave.last().map_or(0, |c| c.1);
                let src_rows = t.transform.source_rows_done(done_rows, n_rows);
                match &t.source {
                    TensorSource::Safetensors(src) => {
                        ck.release_prefix(src, src_rows * t.row_len())
                    }
                    TensorSource::Stacked(parts) => {
                        // experts finished by this wave (not those released by earlier waves)
                        let per = (n_rows / parts.len().max(1)).max(1);
                        let before = wave.first().map_or(0, |c| c.0);
                        let before = t.transform.source_rows_done(before, n_rows) / per;
                        let now = (src_rows / per).min(parts.len());
                        parts[before.min(now)..now]
                            .iter()
                            .for_each(|p| ck.release(p));
                    }
                    _ => {}
                }
            }
        }
        match (input, &t.source) {
            (Input::Checkpoint(ck), TensorSource::Safetensors(src)) => ck.release(src),
            (Input::Checkpoint(ck), TensorSource::Stacked(parts)) => {
                parts.iter().for_each(|p| ck.release(p))
            }
            (Input::Gguf(g), TensorSource::Gguf { index, .. }) => g.release(*index),
            _ => {}
        }
    }
    Ok(())
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
) -> Result<Vec<f32>, ConvertError> {
    let row_len = t.row_len();
    let n_rows = t.n_rows();
    let mut values = vec![0f32; (r1 - r0) * row_len];
    for (i, row) in values.chunks_exact_mut(row_len).enumerate() {
        let src_row = t.transform.source_row(r0 + i, n_rows);
        read_source_row(t, input, src_row, row)?;
    }
    if let Some((i, v)) = quant::first_non_finite(&values) {
        return Err(non_finite(t, r0, i, v, "in the source"));
    }
    Ok(values)
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

/// When the output type is the source dtype, rows are copied as bytes (still checked for NaN
/// and infinity): f16 → f32 → f16 and the like are exact round trips, so this is the same
/// output without two conversions. `None` when a conversion is needed.
fn copy_rows(
    t: &PlannedTensor,
    input: &Input,
    r0: usize,
    r1: usize,
) -> Result<Option<Vec<u8>>, ConvertError> {
    let (Some((first, _)), Input::Checkpoint(ck)) = (t.source_part(0), input) else {
        return Ok(None);
    };
    let dtype = first.dtype;
    let same = matches!(
        (dtype, t.ty),
        (SourceDtype::F16, GgmlType::F16)
            | (SourceDtype::Bf16, GgmlType::Bf16)
            | (SourceDtype::F32, GgmlType::F32)
    );
    if !same || t.f16_intermediate || t.values != ValueOp::None {
        return Ok(None);
    }
    let size = dtype.size();
    let row_len = t.row_len();
    let row_bytes = row_len * size;
    let n_rows = t.n_rows();
    let mut out = Vec::with_capacity((r1 - r0) * row_bytes);
    for r in r0..r1 {
        let (src, s) = t
            .source_part(t.transform.source_row(r, n_rows))
            .expect("rows of the planned source");
        if src.dtype != dtype {
            return Ok(None); // stacked parts of mixed dtypes: the converting path handles them
        }
        out.extend_from_slice(&ck.bytes(src)[s * row_bytes..(s + 1) * row_bytes]);
    }
    // Exponent all ones = infinity or NaN, in each format.
    let bad = match dtype {
        SourceDtype::F16 => out
            .chunks_exact(2)
            .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 == 0x7c00),
        SourceDtype::Bf16 => out
            .chunks_exact(2)
            .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7f80 == 0x7f80),
        SourceDtype::F32 => out
            .chunks_exact(4)
            .position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
    };
    if let Some(i) = bad {
        let mut v = [0f32; 1];
        let (src, s) = t
            .source_part(t.transform.source_row(r0 + i / row_len, n_rows))
            .expect("rows of the planned source");
        ck.read_f32(src, s * row_len + i % row_len, &mut v);
        return Err(non_finite(t, r0, i, v[0], "in the source"));
    }
    Ok(Some(out))
}

/// Output bytes of rows `[r0, r1)` of tensor `t`. `dq` carries the whole tensor's block
/// absmax values and 8-bit codes for NF4 with double quantization.
fn produce_rows(
    t: &PlannedTensor,
    input: &Input,
    r0: usize,
    r1: usize,
    dq: Option<&(Vec<f32>, Vec<u8>)>,
) -> Result<Vec<u8>, ConvertError> {
    if let Some(bytes) = copy_rows(t, input, r0, r1)? {
        return Ok(bytes);
    }
    let mut values = source_rows(t, input, r0, r1)?;
    if t.f16_intermediate {
        // llama.cpp quantizes from our f16 file: round through f16 the same way.
        let mut half = vec![0u8; values.len() * 2];
        quant::quantize(GgmlType::F16, &values, &mut half).expect("finite values");
        quant::dequantize(GgmlType::F16, &half, &mut values).expect("lengths match");
        if let Some((i, v)) = quant::first_non_finite(&values) {
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
    let mut out = vec![0u8; n_bytes];
    match (t.ty, dq) {
        (GgmlType::Nf4Dq { block }, Some((absmax, codes))) => {
            let b0 = r0 * t.row_len() / block as usize;
            let nb = values.len() / block as usize;
            quant::nf4::quantize_nf4_dq(
                &values,
                block as usize,
                &codes[b0..b0 + nb],
                &absmax[b0..b0 + nb],
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
                    quant::weighted::quantize_weighted(t.ty, x, qw, o).map_err(|e| {
                        ConvertError::Quant {
                            tensor: t.name.clone(),
                            source: e,
                        }
                    })?;
                }
            }
            None => quant::quantize_prechecked(t.ty, &values, &mut out).map_err(|e| {
                ConvertError::Quant {
                    tensor: t.name.clone(),
                    source: e,
                }
            })?,
        },
    }
    Ok(out)
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
