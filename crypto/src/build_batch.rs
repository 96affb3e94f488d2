//! Building several packets at once. A packet's cost is its hops' shared secrets: one
//! variable-base multiplication and one encoding per hop, 80 % of a 6-hop build. A batch
//! does each hop's multiplications for up to [`MAX_LANES`] packets in one run of a lane
//! kernel (the kernel that unwraps batches, [`crate::lanes`]), and the first hop's group
//! elements in lanes too (or, with no kernel, at one field inversion for the lot). What it writes is byte for byte what
//! [`build_into_traced`](crate::build_into_traced) writes for each packet in turn from the
//! same RNG: the randomness is drawn in the same order (each packet's scalar, then its
//! routing padding) before any multiplication.
//!
//! Clients and load generators that build more than one packet at a time use it; a
//! steered build (a node's own loops, [`crate::build::build_into_steered`]) draws until it
//! likes the result and stays one at a time.

use curve25519_dalek::scalar::Scalar;
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::build::{BuildError, Hop, check, padding_len, write_body, write_routing};
use crate::keys::{HopKeys, random_scalar};
use crate::lanes::{Kernel, MAX_LANES, mul_base_encoded, mul_encoded, mul_one_point};
use crate::params::{ALPHA_LEN, BETA_LEN, HEADER_LEN, MAC_LEN, MAX_HOPS, Params};
use crate::primitives::{compress, mul};

/// One packet of a batch: the path it travels and the payload it carries.
#[derive(Clone, Copy, Debug)]
pub struct BuildJob<'a> {
    pub path: &'a [Hop],
    pub payload: &'a [u8],
}

/// Builds one packet per job into `outs` (each exactly one packet long) with the hops'
/// multiplications in the lanes of `kernel`, and writes each packet's second-hop MAC
/// (see [`crate::build_into_traced`]) into `macs`. Every job is checked before anything is
/// drawn or written: on an error nothing is. The packets are the ones
/// [`crate::build_into_traced`] would build for the jobs in turn from the same `rng`.
pub fn build_batch<R: CryptoRng + ?Sized>(
    params: &Params,
    kernel: Kernel,
    jobs: &[BuildJob<'_>],
    rng: &mut R,
    outs: &mut [&mut [u8]],
    macs: &mut [[u8; MAC_LEN]],
) -> Result<(), BuildError> {
    if outs.len() != jobs.len() || macs.len() != jobs.len() {
        return Err(BuildError::BatchLength {
            jobs: jobs.len(),
            outs: outs.len(),
            macs: macs.len(),
        });
    }
    for (job, out) in jobs.iter().zip(outs.iter()) {
        check(params, job.path, job.payload, out.len())?;
    }
    for ((jobs, outs), macs) in jobs
        .chunks(MAX_LANES)
        .zip(outs.chunks_mut(MAX_LANES))
        .zip(macs.chunks_mut(MAX_LANES))
    {
        build_run(kernel, jobs, rng, outs, macs);
    }
    Ok(())
}

/// Up to [`MAX_LANES`] checked jobs.
fn build_run<R: CryptoRng + ?Sized>(
    kernel: Kernel,
    jobs: &[BuildJob<'_>],
    rng: &mut R,
    outs: &mut [&mut [u8]],
    macs: &mut [[u8; MAC_LEN]],
) {
    let n = jobs.len();
    // The randomness, in the order one-at-a-time building draws it.
    let mut xs = Zeroizing::new([Scalar::ZERO; MAX_LANES]);
    let mut pads = Zeroizing::new([[0u8; BETA_LEN]; MAX_LANES]);
    for (j, job) in jobs.iter().enumerate() {
        xs[j] = random_scalar(rng);
        rng.fill_bytes(&mut pads[j][..padding_len(job.path.len())]);
    }
    // Each packet's first group element, x·B.
    let mut alphas = [[0u8; ALPHA_LEN]; MAX_LANES];
    mul_base_encoded(kernel, &xs[..n], &mut alphas[..n]);
    // Each hop's shared secrets, the packets that still have that hop in lanes.
    let mut keys: Box<[[HopKeys; MAX_HOPS]; MAX_LANES]> = Box::default();
    let longest = jobs.iter().map(|j| j.path.len()).max().unwrap_or(0);
    for hop in 0..longest {
        let mut who = [0usize; MAX_LANES];
        let mut points = [[0u8; 32]; MAX_LANES];
        let mut scalars = Zeroizing::new([Scalar::ZERO; MAX_LANES]);
        let mut m = 0;
        for (j, job) in jobs.iter().enumerate() {
            if let Some(h) = job.path.get(hop) {
                (who[m], points[m], scalars[m]) = (j, h.key.to_bytes(), xs[j]);
                m += 1;
            }
        }
        let mut secrets = Zeroizing::new([None; MAX_LANES]);
        // One key for them all (packets along one path): decoded once.
        let mut shared = Zeroizing::new([[0u8; 32]; MAX_LANES]);
        if points[..m].iter().all(|p| *p == points[0])
            && mul_one_point(kernel, &points[0], &scalars[..m], &mut shared[..m])
        {
            for (s, p) in secrets.iter_mut().zip(&shared[..m]) {
                *s = Some(*p);
            }
        } else if kernel != Kernel::Portable && m >= kernel.lanes_from() {
            mul_encoded(kernel, &points[..m], &scalars[..m], &mut secrets[..m]);
        }
        for (k, &j) in who[..m].iter().enumerate() {
            let h = &jobs[j].path[hop];
            // A key is a valid point and x is not zero, so a lane's product exists; one
            // that did not run in lanes is made here, as `build` makes it.
            let secret =
                Zeroizing::new(secrets[k].unwrap_or_else(|| compress(&mul(h.key.point(), &xs[j]))));
            keys[j][hop] = HopKeys::derive(&secret);
            xs[j] *= keys[j][hop].blinding();
        }
    }
    for (j, job) in jobs.iter().enumerate() {
        let (header, body) = outs[j].split_at_mut(HEADER_LEN);
        header[..ALPHA_LEN].copy_from_slice(&alphas[j]);
        job.path[0].phase.mark(&mut header[..ALPHA_LEN]);
        let hops = job.path.len();
        let pad = &pads[j][..padding_len(hops)];
        macs[j] = write_routing(
            job.path,
            &keys[j][..hops],
            |p| p.copy_from_slice(pad),
            &mut header[ALPHA_LEN..HEADER_LEN],
        );
        write_body(&keys[j][..hops], job.payload, body);
    }
}
