//! The CPU backend's fork-join team: every parallel loop of the backend runs its tasks here
//! (`run`, `chunks_mut`, `chunks_mut2`, `map`, `each`; `Parts` for outputs written in parts),
//! on the calling thread and helper threads that spin between loops instead of sleeping.
//!
//! Why not rayon's `par_iter` (which the backend used before): a DARTS weight step at C8 L5
//! batch 16 runs ~5,300 parallel loops of 1-10 us tasks, and on a 2-core box rayon's workers
//! go to sleep between them; waking one costs ~10-30 us, so a rayon loop of two 10 us tasks
//! took 30-55 us against 21 us run serially and ~12 us here (`perf`: the calling thread spent
//! 18% of a step waiting in `join` for a late worker, which spent 26% of it asleep).
//!
//! How: the caller publishes the job (a closure and its task count, grouped into at most
//! `MAX_CLAIMS` claims) and takes shares of the claims from the front of one atomic word,
//! `epoch | back | front`, while helpers spinning on that word take shares from the back;
//! the caller returns once every claim has run. A helper never waits for anything, so a late
//! or parked one costs nothing: the caller goes on to the claims nobody has taken. A helper
//! dereferences the job only after a claim of its epoch succeeded, and the caller keeps the
//! job alive until all its claims are done, so a successful claim always sees a live job.
//! Helpers park after `SPIN` of idle spinning (between steps, or when the program is done
//! with the backend) and are unparked by the next job.
//!
//! Results never depend on which thread runs a task (tasks write disjoint outputs, and
//! reductions combine per-task results in task order), so they do not depend on the
//! number of threads (tests/thread_count.rs). The team has `rayon::current_num_threads()`
//! members (`--threads`, `RAYON_NUM_THREADS`), caller included. A loop started while the team
//! is busy (from inside a task, or by a second thread using the backend at the same time)
//! runs serially on its caller.

use std::any::Any;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle helper spins before it parks: longer than the gaps between a step's
/// loops (us), shorter than anything a user would notice as a busy core.
const SPIN: Duration = Duration::from_micros(200);
/// Claims per job are counted in 16 bits of the word; more tasks are claimed in groups.
const MAX_CLAIMS: usize = u16::MAX as usize;
/// More helpers than this are never started (the team is for one machine's cores).
const MAX_HELPERS: usize = 255;

/// The published job: `f` over tasks `claim * per_claim ..` (up to `tasks`).
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    per_claim: usize,
}

struct Shared {
    /// `epoch << 32 | back << 16 | front`: the job's number and its unclaimed claims,
    /// `front..back`. The caller claims from the front, helpers from the back, so the caller
    /// runs the first tasks of every loop and a helper the last ones: a sample's planes stay
    /// on the same core from one op to the next (dynamic claims interleaved them, and a
    /// step ran no faster than with rayon for the cache misses).
    word: AtomicU64,
    /// The current job (valid while its epoch has unfinished claims).
    job: AtomicPtr<Job<'static>>,
    /// The current job's claim count.
    total: AtomicU64,
    /// Claims of the current job finished (run or panicked).
    done: AtomicUsize,
    /// Helpers the current job wants (`current_num_threads() - 1`).
    wanted: AtomicUsize,
    /// Held by the thread whose job is published.
    busy: AtomicBool,
    /// The first panic of a task on a helper, re-raised on the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    helpers: Mutex<Vec<Helper>>,
    /// `helpers.len()`, read without the lock.
    started: AtomicUsize,
    /// Helpers parked or about to park: the caller takes the lock to unpark only when
    /// this is non-zero.
    parked: AtomicUsize,
}

struct Helper {
    thread: Thread,
    parked: &'static AtomicBool,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| Shared {
        word: AtomicU64::new(0),
        job: AtomicPtr::new(std::ptr::null_mut()),
        total: AtomicU64::new(0),
        done: AtomicUsize::new(0),
        wanted: AtomicUsize::new(0),
        busy: AtomicBool::new(false),
        panic: Mutex::new(None),
        helpers: Mutex::new(Vec::new()),
        started: AtomicUsize::new(0),
        parked: AtomicUsize::new(0),
    })
}

fn back(word: u64) -> u64 {
    (word >> 16) & 0xffff
}
fn front(word: u64) -> u64 {
    word & 0xffff
}
/// Whether `word` has an unclaimed claim.
fn open(word: u64) -> bool {
    front(word) < back(word)
}

/// Claims a share of the published job's unclaimed claims (from the front for the caller,
/// the back for a helper) and runs it; false when none is left. A member's first share of
/// a job is its part of an even split (the job's claims over the team's size), later ones
/// a fraction of what is left, shrinking to one claim as the loop ends: members that start
/// together split a loop in one claim each (every claim moves the word's cache line between
/// cores, ~0.1-0.2 us, which claim by claim cost 10% of a C8 L5 step), and a late one still
/// gets a fair part. `seen` is the epoch of the member's last claim.
fn claim_and_run(s: &Shared, caller: bool, seen: &mut u64) -> bool {
    let mut w = s.word.load(Acquire);
    loop {
        if !open(w) {
            return false;
        }
        let job = s.job.load(Acquire);
        let members = s.wanted.load(Relaxed) as u64 + 1;
        let left = back(w) - front(w);
        let share = if w >> 32 != *seen {
            (s.total.load(Acquire) / members).clamp(1, left)
        } else {
            (left / (2 * members)).max(1)
        };
        let (claimed, new) = if caller {
            (front(w), w + share)
        } else {
            (back(w) - share, w - (share << 16))
        };
        match s.word.compare_exchange_weak(w, new, AcqRel, Acquire) {
            Ok(_) => {
                *seen = w >> 32;
                // SAFETY: the claim succeeded, so the job of this epoch has an unfinished
                // claim and its caller is still waiting in `run`, keeping the job alive;
                // it published `job` before the word, and cannot have replaced it since
                // (that needs every claim of this epoch finished).
                let job = unsafe { &*job };
                let first = claimed as usize * job.per_claim;
                let last = (first + share as usize * job.per_claim).min(job.tasks);
                let result = catch_unwind(AssertUnwindSafe(|| (first..last).for_each(job.f)));
                if let Err(payload) = result {
                    let mut slot = s.panic.lock().unwrap_or_else(|e| e.into_inner());
                    slot.get_or_insert(payload);
                }
                s.done.fetch_add(share as usize, Release);
                return true;
            }
            Err(now) => w = now,
        }
    }
}

/// A helper's life: claim tasks while there are any, spin while idle, park after `SPIN`.
fn helper_loop(s: &'static Shared, index: usize, parked: &'static AtomicBool) {
    let mut seen = u64::MAX;
    loop {
        let idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            if index < s.wanted.load(Relaxed) && claim_and_run(s, false, &mut seen) {
                break;
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && idle_since.elapsed() > SPIN {
                parked.store(true, SeqCst);
                s.parked.fetch_add(1, SeqCst);
                // Re-check after announcing: a job published before the count went up
                // would otherwise not unpark this helper (the caller stores the word, then
                // reads the count; both SeqCst, so one of the two sees the other).
                let w = s.word.load(SeqCst);
                if !open(w) || index >= s.wanted.load(SeqCst) {
                    std::thread::park();
                }
                s.parked.fetch_sub(1, SeqCst);
                parked.store(false, SeqCst);
                break;
            }
        }
    }
}

/// Starts helpers until there are `n` (or as many as the system lets us start).
fn ensure_helpers(s: &'static Shared, n: usize) {
    if s.started.load(Acquire) >= n {
        return;
    }
    let mut helpers = s.helpers.lock().unwrap_or_else(|e| e.into_inner());
    while helpers.len() < n {
        let index = helpers.len();
        let parked: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let spawned = std::thread::Builder::new()
            .name(format!("nasrs-cpu-{}", index + 1))
            .spawn(move || helper_loop(s, index, parked));
        match spawned {
            Ok(handle) => {
                helpers.push(Helper {
                    thread: handle.thread().clone(),
                    parked,
                });
                s.started.store(helpers.len(), Release);
            }
            // Fewer helpers only means less parallelism; the caller runs what is left.
            Err(_) => break,
        }
    }
}

/// Runs `f(i)` for every `i` in `0..tasks`, on the team; returns when all have run. `f` must
/// write only what task `i` owns for the result not to depend on the thread count.
pub(crate) fn run(tasks: usize, f: impl Fn(usize) + Sync) {
    let helpers = rayon::current_num_threads()
        .saturating_sub(1)
        .min(MAX_HELPERS);
    let s = shared();
    if tasks <= 1 || helpers == 0 || s.busy.swap(true, Acquire) {
        (0..tasks).for_each(f);
        return;
    }
    ensure_helpers(s, helpers);
    let per_claim = tasks.div_ceil(MAX_CLAIMS);
    let claims = tasks.div_ceil(per_claim) as u64;
    let job = Job {
        f: &f,
        tasks,
        per_claim,
    };
    s.done.store(0, Relaxed);
    s.total.store(claims, Relaxed);
    s.wanted.store(helpers, SeqCst);
    // SAFETY (of the lifetime erasure): helpers use the job only while one of its claims
    // is unfinished, and this function returns only after all are finished.
    let job_ptr = &job as *const Job<'_> as *mut Job<'static>;
    s.job.store(job_ptr, SeqCst);
    let epoch = (s.word.load(Relaxed) >> 32).wrapping_add(1);
    s.word.store(epoch << 32 | claims << 16, SeqCst);
    if s.parked.load(SeqCst) > 0 {
        let list = s.helpers.lock().unwrap_or_else(|e| e.into_inner());
        for h in list.iter().take(helpers) {
            if h.parked.load(SeqCst) {
                h.thread.unpark();
            }
        }
    }
    let mut seen = u64::MAX;
    while claim_and_run(s, true, &mut seen) {}
    while (s.done.load(Acquire) as u64) < claims {
        std::hint::spin_loop();
    }
    s.job.store(std::ptr::null_mut(), Relaxed);
    let payload = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
    s.busy.store(false, Release);
    if let Some(payload) = payload {
        resume_unwind(payload);
    }
}

/// A mutable buffer shared with the team's tasks, each of which takes its own part of it
/// (`part`): how a loop writes several outputs, or one in parts of uneven size.
pub(crate) struct Parts<'a, T> {
    ptr: *mut T,
    len: usize,
    _buf: PhantomData<&'a mut [T]>,
}

// SAFETY: tasks reach disjoint elements only (the contract of `part`), so sharing the parts
// is handing each task a `&mut` to its own elements of a buffer of `Send` values.
unsafe impl<T: Send> Sync for Parts<'_, T> {}

impl<'a, T> Parts<'a, T> {
    pub(crate) fn new(buf: &'a mut [T]) -> Self {
        Parts {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _buf: PhantomData,
        }
    }

    /// Elements `range` of the buffer.
    ///
    /// # Safety
    /// No two calls while the parts live may take overlapping ranges (in practice: each
    /// task takes the range its index owns).
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn part(&self, range: Range<usize>) -> &mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "part out of bounds"
        );
        // SAFETY: in bounds (checked), and not aliased (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

/// Elements `[i * chunk, (i + 1) * chunk)` of `len`, the last range possibly short: chunk
/// `i` of a loop over `len` elements in chunks of `chunk`.
pub(crate) fn chunk_range(i: usize, chunk: usize, len: usize) -> Range<usize> {
    i * chunk..((i + 1) * chunk).min(len)
}

/// `f(i, chunk_i)` over consecutive chunks of `chunk` elements of `buf` (the last one
/// possibly short), on the team.
pub(crate) fn chunks_mut<T: Send>(buf: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let chunk = chunk.max(1);
    let len = buf.len();
    let parts = Parts::new(buf);
    run(len.div_ceil(chunk), |i| {
        // SAFETY: task i takes chunk i, disjoint from every other task's.
        f(i, unsafe { parts.part(chunk_range(i, chunk, len)) })
    });
}

/// `f(i, a_i, b_i)` over consecutive chunks of `a` (`ca` elements) and `b` (`cb`), which
/// must have the same number of chunks.
pub(crate) fn chunks_mut2<A: Send, B: Send>(
    a: &mut [A],
    ca: usize,
    b: &mut [B],
    cb: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) {
    let (ca, cb) = (ca.max(1), cb.max(1));
    let (la, lb) = (a.len(), b.len());
    let tasks = la.div_ceil(ca);
    assert_eq!(tasks, lb.div_ceil(cb), "chunks_mut2: chunk counts differ");
    let (pa, pb) = (Parts::new(a), Parts::new(b));
    run(tasks, |i| {
        // SAFETY: task i takes chunk i of each buffer, disjoint from every other task's.
        let (x, y) = unsafe {
            (
                pa.part(chunk_range(i, ca, la)),
                pb.part(chunk_range(i, cb, lb)),
            )
        };
        f(i, x, y)
    });
}

/// `[f(0), .., f(tasks - 1)]`, computed on the team (in task order, whichever thread ran
/// each).
pub(crate) fn map<R: Send>(tasks: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let mut out: Vec<MaybeUninit<R>> = Vec::with_capacity(tasks);
    // SAFETY: MaybeUninit needs no initialisation.
    unsafe { out.set_len(tasks) };
    chunks_mut(&mut out, 1, |i, slot| {
        slot[0].write(f(i));
    });
    // SAFETY: `run` returned normally, so every task ran and wrote its slot (a panic in
    // any task is re-raised before this point, leaking the written results).
    out.into_iter()
        .map(|v| unsafe { v.assume_init() })
        .collect()
}

/// `f(item)` for every item, each moved into its own task, on the team.
pub(crate) fn each<X: Send>(items: Vec<X>, f: impl Fn(X) + Sync) {
    let mut slots: Vec<Option<X>> = items.into_iter().map(Some).collect();
    chunks_mut(&mut slots, 1, |_, slot| {
        if let Some(item) = slot[0].take() {
            f(item)
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_and_map_keeps_order() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        pool.install(|| {
            for tasks in [0, 1, 2, 7, 100, MAX_CLAIMS + 3] {
                let mut hits = vec![0u8; tasks];
                chunks_mut(&mut hits, 1, |_, h| h[0] += 1);
                assert!(hits.iter().all(|&h| h == 1), "{tasks} tasks");
                let squares = map(tasks, |i| i * i);
                assert_eq!(squares, (0..tasks).map(|i| i * i).collect::<Vec<_>>());
            }
            // A loop inside a task runs serially on that task's thread.
            let nested = map(4, |i| map(3, |j| i * 3 + j));
            assert_eq!(nested.concat(), (0..12).collect::<Vec<_>>());
        });
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_team_recovers() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        pool.install(|| {
            let r = catch_unwind(|| run(64, |i| assert!(i != 41, "task 41")));
            assert!(r.is_err());
            assert_eq!(map(5, |i| i + 1), vec![1, 2, 3, 4, 5]);
        });
    }
}
