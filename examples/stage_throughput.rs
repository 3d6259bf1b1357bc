//! Throughput of each conversion stage in isolation, one core each, on a real checkpoint, so
//! the limit of a whole conversion on a machine with more cores can be read off:
//! read (page-cache → user memory, as `cat` does), f16 → f32, quantize (per type, from f32),
//! SHA-256, and write (user memory → a file in OUT_DIR).
//!
//!     cargo run --release --example stage_throughput -- MODEL_DIR OUT_DIR [TYPE...]
//!
//! Prints one line per stage: GB of source (or output) per second and per core.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use qforge::gguf::GgmlType;
use sha2::Digest;

fn shard_paths(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("model folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    v.sort();
    v
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: stage_throughput MODEL_DIR OUT_DIR [TYPE...]");
        std::process::exit(2);
    }
    let (model, out_dir) = (Path::new(&args[1]), Path::new(&args[2]));
    let types: Vec<String> = if args.len() > 3 {
        args[3..].to_vec()
    } else {
        ["q8_0", "q4_0", "q4_k"].map(String::from).to_vec()
    };
    let shards = shard_paths(model);
    // read: the whole checkpoint through a 4 MiB buffer (warm page cache, as after `cat`)
    let mut buf = vec![0u8; 4 << 20];
    let mut total = 0u64;
    for _ in 0..2 {
        total = 0;
        let t0 = Instant::now();
        for p in &shards {
            let mut f = std::fs::File::open(p).expect("shard");
            loop {
                let n = f.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
        println!(
            "read (page cache -> memory)  {:>6.2} GB/s",
            total as f64 / t0.elapsed().as_secs_f64() / 1e9
        );
    }
    // a 256 MiB f16 sample of the first shard's data stands for the rest
    let mut f = std::fs::File::open(&shards[0]).expect("shard");
    let mut sample = vec![0u8; 256 << 20];
    let n = f.read(&mut sample).expect("read");
    let mut sample = sample[..n / 512 * 512].to_vec(); // whole 256-element super-blocks
                                                       // finite f16 values: clear the exponent's top bit (header bytes are not f16)
    sample.chunks_exact_mut(2).for_each(|b| b[1] &= 0xbf);
    let elements = sample.len() / 2;
    // every stage runs twice and the second run counts: the first pays for backing fresh
    // memory, which the pipeline does not (it reuses its buffers)
    let mut values = vec![0f32; elements];
    let mut s = 0.0;
    for _ in 0..2 {
        let t0 = Instant::now();
        qforge::quant::dequantize(GgmlType::F16, &sample, &mut values).expect("f16");
        s = t0.elapsed().as_secs_f64();
    }
    println!(
        "f16 -> f32                   {:>6.2} GB/s of f16",
        sample.len() as f64 / s / 1e9
    );
    let t0 = Instant::now();
    let bad = qforge::quant::float::first_non_finite_bytes(GgmlType::F16, &sample);
    let s = t0.elapsed().as_secs_f64();
    assert!(bad.is_none());
    println!(
        "NaN/Inf check on f16 bytes   {:>6.2} GB/s of f16",
        sample.len() as f64 / s / 1e9
    );
    for ty in &types {
        let ty = qforge::convert::parse_ggml_type(ty).expect("type");
        let mut q = vec![0u8; ty.bytes_for(elements as u64).expect("whole blocks") as usize];
        let mut s = 0.0;
        for _ in 0..2 {
            let t0 = Instant::now();
            qforge::quant::quantize(ty, &values, &mut q).expect("quantize");
            s = t0.elapsed().as_secs_f64();
        }
        println!(
            "quantize {:<8}             {:>6.2} GB/s of f16 source ({:.2} GB/s written)",
            ty.name(),
            sample.len() as f64 / s / 1e9,
            q.len() as f64 / s / 1e9
        );
    }
    let t0 = Instant::now();
    let h = sha2::Sha256::digest(&sample);
    let s = t0.elapsed().as_secs_f64();
    std::hint::black_box(h);
    println!(
        "SHA-256                      {:>6.2} GB/s",
        sample.len() as f64 / s / 1e9
    );
    // write: the sample repeated up to the checkpoint's size into a new file
    let path = out_dir.join("stage-write.tmp");
    let t0 = Instant::now();
    {
        let mut w = std::fs::File::create(&path).expect("output file");
        let mut left = total;
        while left > 0 {
            let k = left.min(sample.len() as u64) as usize;
            w.write_all(&sample[..k]).expect("write");
            left -= k as u64;
        }
    }
    let s = t0.elapsed().as_secs_f64();
    std::fs::remove_file(&path).expect("remove");
    println!(
        "write (memory -> new file)   {:>6.2} GB/s",
        total as f64 / s / 1e9
    );
}
