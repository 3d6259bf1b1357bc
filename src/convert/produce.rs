//! What a conversion worker does with one job: read a row chunk of the source (through the
//! row transform and value change), check it for NaN/Inf, and copy it (the source's own type:
//! in place from the mapping where rows are in order) or quantize it, including the NF4_DQ
//! whole-tensor pass; plus reading GGUF tensors back row by row and dropping source pages the
//! pipeline has finished with.

use std::sync::Arc;

use rayon::prelude::*;

use crate::arch::{Transform, ValueOp};
use crate::gguf::GgmlType;
use crate::quant;
use crate::source::SourceDtype;

use super::plan::{Input, Plan, PlannedTensor, TensorSource};
use super::run::{Chunk, Job, StageTimes};
use super::ConvertError;

/// NF4 with double quantization needs every block's absmax before the first block can be
/// written (the offset is their mean); computed once per tensor by the first worker to need
/// it, dropped when the state companion has been written.
pub(super) enum DqSlot {
    Empty,
    Ready(Arc<DqData>),
    Failed(String),
}

pub(super) struct DqData {
    absmax: Vec<f32>,
    codes: Vec<u8>,
    state: Vec<f32>,
}

/// A worker's reusable buffers.
#[derive(Default)]
pub(super) struct Scratch {
    values: Vec<f32>,
    half: Vec<u8>,
}

/// What the pipeline threads share.
pub(super) struct Worker<'a> {
    pub(super) plan: &'a Plan,
    pub(super) input: &'a Input,
    pub(super) jobs: &'a [Job],
    pub(super) dq_owner: &'a [Option<usize>],
    pub(super) dq_slots: &'a [std::sync::Mutex<DqSlot>],
    pub(super) buffers: &'a std::sync::Mutex<Vec<Vec<u8>>>,
    pub(super) pool: &'a rayon::ThreadPool,
    pub(super) times: &'a StageTimes,
    pub(super) lookahead: usize,
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

    pub(super) fn give_back(&self, v: Vec<u8>) {
        let mut b = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() < 64 {
            b.push(v);
        }
    }

    /// Start reading job `k`'s source from disk before a worker needs it.
    pub(super) fn read_ahead(&self, k: usize) {
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
    pub(super) fn release_source(&self, job: Job) {
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
    pub(super) fn produce(
        &self,
        k: usize,
        scratch: &mut Scratch,
    ) -> Result<Chunk<'a>, ConvertError> {
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
