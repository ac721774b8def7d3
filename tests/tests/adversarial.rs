//! Read-your-writes across real processes, on a network that delays
//! traffic: once an eviction has returned `Ok`, a read that starts afterwards,
//! in any process, gets the written value or a newer one.
//!
//! Writer processes bump a row in a database (a counter on a Redis server of
//! its own) and then evict the row's cached entry, by every eviction route;
//! reader processes call a `#[redis_cached]` read of the row whose body
//! returns late, so that its store comes after writes it did not see. A
//! proxy in front of the cache's Redis server holds commands and replies
//! back for random short times, so that commands from different processes
//! reach Redis in either order. Every operation is recorded with the
//! database server's clock, and a checker reads the history: a read that
//! started after write k's eviction had returned must return version k or
//! newer. The workers are `tests/src/bin/adversarial_worker.rs`.
//!
//! `leases.rs` races caches within one process; here the processes share
//! nothing but Redis, so what holds is what the lease in the entry's key
//! (ARCHITECTURE.md, "Leases") guarantees on its own.

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, SystemTime};

use cache_tests::{DelayingProxy, Delays, RedisServer, one_worker_runtime};
use redis::Commands;

/// How long the processes race.
const RUN: Duration = Duration::from_secs(8);
/// Processes of each role, and concurrent tasks in each process. Several
/// readers in one process also race its flights: a read that starts after an
/// eviction may join one whose leader read before it.
const WRITERS: u64 = 2;
const TASKS_PER_WRITER: u64 = 1;
const READERS: u64 = 3;
const TASKS_PER_READER: u64 = 6;
/// Short next to the workers' 2 s deadline: commands come late, never lost.
const DELAYS: Delays = Delays {
    one_in: 4,
    longest: Duration::from_millis(30),
};

#[test]
fn no_read_that_starts_after_an_eviction_returned_gets_an_older_version_in_any_process() {
    let database = RedisServer::start();
    let cache_server = RedisServer::start();
    // The seed fixes the random delays and routes, not the interleaving.
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos() as u64;
    let proxy_runtime = one_worker_runtime();
    let proxy = proxy_runtime.block_on(DelayingProxy::start(cache_server.port(), DELAYS, seed));

    let roles = (0..WRITERS)
        .map(|_| ("writer", TASKS_PER_WRITER))
        .chain((0..READERS).map(|_| ("reader", TASKS_PER_READER)));
    let mut workers: Vec<Worker> = roles
        .enumerate()
        .map(|(process, (role, tasks))| {
            let worker_seed = seed.wrapping_add(process as u64 * 0x2545_f491_4f6c_dd1d);
            Worker::start(&proxy.url(), &database.url(), role, tasks, worker_seed)
        })
        .collect();
    let _: () = database.client().set("go", 1).expect("SET go");

    let mut history = Vec::new();
    for (process, worker) in workers.iter_mut().enumerate() {
        let lines = worker.history();
        history.extend(lines.iter().map(|line| Operation::parse(process, line)));
    }
    let last_version: u64 = database.client().get("row:1").expect("GET the row");

    let summary = Summary::of(&history);
    println!(
        "seed {seed}: {summary:?}; the proxy held back {} reads of bytes",
        proxy.delayed()
    );
    assert!(
        summary.writes >= 50 && summary.reads >= 200 && summary.reads_after_a_write >= 100,
        "too little history to prove anything (seed {seed}): {summary:?}"
    );
    assert!(proxy.delayed() > 0, "the proxy delayed nothing");
    assert!(
        summary.unconfirmed_writes * 10 <= summary.writes,
        "evictions failed often (their errors are above): the proxy's delays should stay \
         well short of the workers' deadline: {summary:?}"
    );
    let impossible: Vec<_> = history
        .iter()
        .filter(
            |operation| matches!(operation.kind, Kind::Read { version } if version > last_version),
        )
        .collect();
    assert!(
        impossible.is_empty(),
        "reads of versions never written (the last is {last_version}): {impossible:?}"
    );

    let stale = stale_reads(&history);
    assert!(
        stale.is_empty(),
        "{} of {} reads started after an eviction had returned, yet got a version older than \
         the write before it (seed {seed}; times in µs from the first operation):\n{}",
        stale.len(),
        summary.reads,
        describe(&stale[..stale.len().min(10)], &history)
    );
}

/// A worker process, killed if the test ends before it does.
struct Worker {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    /// Starts a worker and waits until it is ready for the go.
    fn start(cache_url: &str, database_url: &str, role: &str, tasks: u64, seed: u64) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_adversarial_worker"))
            .args([cache_url, database_url, role])
            .args([
                tasks.to_string(),
                RUN.as_millis().to_string(),
                seed.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a worker process");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let first = lines.next().map(|line| line.expect("the worker's stdout"));
        assert_eq!(first.as_deref(), Some("ready"), "a {role} did not start");
        Worker { child, lines }
    }

    /// Its history lines, once it has exited successfully.
    fn history(&mut self) -> Vec<String> {
        let lines: Vec<String> = self
            .lines
            .by_ref()
            .map(|line| line.expect("the worker's stdout"))
            .collect();
        let status = self.child.wait().expect("wait for a worker");
        assert!(
            status.success(),
            "a worker failed ({status}); its stderr is above"
        );
        lines
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One operation of the history: in which process, and when, by the
/// database server's clock (µs): `start` before it began, `end` after it
/// returned.
#[derive(Debug)]
struct Operation {
    process: usize,
    start: u64,
    end: u64,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// Wrote `version`, then evicted by `route`, and the eviction returned `Ok`.
    Write {
        version: u64,
        route: String,
    },
    /// Wrote, but the eviction failed (the worker said why on stderr): it
    /// promises nothing.
    UnconfirmedWrite,
    Read {
        version: u64,
    },
}

impl Operation {
    /// Parses one of the worker's lines (see `adversarial_worker.rs`).
    fn parse(process: usize, line: &str) -> Operation {
        let fields: Vec<&str> = line.split(' ').collect();
        let number = |at: usize| -> u64 {
            fields
                .get(at)
                .and_then(|field| field.parse().ok())
                .unwrap_or_else(|| panic!("process {process} printed {line:?}"))
        };
        let kind = match fields[0] {
            "write" => Kind::Write {
                version: number(3),
                route: fields[4].to_owned(),
            },
            "unconfirmed" => Kind::UnconfirmedWrite,
            "read" => Kind::Read { version: number(3) },
            _ => panic!("process {process} printed {line:?}"),
        };
        Operation {
            process,
            start: number(1),
            end: number(2),
            kind,
        }
    }
}

/// A read (its index in the history) that got an older version than a write
/// (its index) whose eviction had returned before the read began.
#[derive(Debug)]
struct StaleRead {
    read: usize,
    write: usize,
}

/// The reads that break read-your-writes, by start: for each read, the newest write
/// whose eviction had returned before the read started (its `end` before the
/// read's `start`, both on one clock) must not be newer than what it got.
fn stale_reads(history: &[Operation]) -> Vec<StaleRead> {
    // Confirmed writes by when they returned, each with the newest version
    // written by then.
    let mut writes: Vec<(usize, u64)> = history
        .iter()
        .enumerate()
        .filter_map(|(index, operation)| match operation.kind {
            Kind::Write { version, .. } => Some((index, version)),
            _ => None,
        })
        .collect();
    writes.sort_by_key(|&(index, _)| history[index].end);
    let mut newest_by_then: Vec<(u64, usize, u64)> = Vec::with_capacity(writes.len());
    for (index, version) in writes {
        let (end, newest) = (history[index].end, newest_by_then.last());
        newest_by_then.push(match newest {
            Some(&(_, newest_index, newest_version)) if newest_version >= version => {
                (end, newest_index, newest_version)
            }
            _ => (end, index, version),
        });
    }

    let mut stale = Vec::new();
    for (read, operation) in history.iter().enumerate() {
        let Kind::Read { version } = operation.kind else {
            continue;
        };
        let returned_before = newest_by_then.partition_point(|&(end, ..)| end < operation.start);
        if let Some(&(_, write, required)) = returned_before
            .checked_sub(1)
            .map(|last| &newest_by_then[last])
            && version < required
        {
            stale.push(StaleRead { read, write });
        }
    }
    stale.sort_by_key(|stale_read| history[stale_read.read].start);
    stale
}

/// Each stale read beside the write it missed.
fn describe(stale: &[StaleRead], history: &[Operation]) -> String {
    let origin = history
        .iter()
        .map(|operation| operation.start)
        .min()
        .unwrap_or(0);
    let at = |operation: &Operation| {
        format!(
            "process {} [{}, {}]",
            operation.process,
            operation.start - origin,
            operation.end - origin
        )
    };
    stale
        .iter()
        .map(|&StaleRead { read, write }| {
            let (read, write) = (&history[read], &history[write]);
            let (Kind::Read { version: got }, Kind::Write { version, route }) =
                (&read.kind, &write.kind)
            else {
                unreachable!("a stale read pairs a read with a write");
            };
            format!(
                "  read in {} got {got}; write of {version} in {}, evicted by {route}",
                at(read),
                at(write)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How much history there is to check.
#[derive(Debug)]
struct Summary {
    writes: usize,
    unconfirmed_writes: usize,
    reads: usize,
    /// Reads that began after some write's eviction had returned: the ones
    /// the checker can fault.
    reads_after_a_write: usize,
}

impl Summary {
    fn of(history: &[Operation]) -> Summary {
        let first_return = history
            .iter()
            .filter(|operation| matches!(operation.kind, Kind::Write { .. }))
            .map(|operation| operation.end)
            .min()
            .unwrap_or(u64::MAX);
        let count = |matches: &dyn Fn(&Operation) -> bool| {
            history
                .iter()
                .filter(|operation| matches(operation))
                .count()
        };
        Summary {
            writes: count(&|operation| matches!(operation.kind, Kind::Write { .. })),
            unconfirmed_writes: count(&|operation| {
                matches!(operation.kind, Kind::UnconfirmedWrite)
            }),
            reads: count(&|operation| matches!(operation.kind, Kind::Read { .. })),
            reads_after_a_write: count(&|operation| {
                matches!(operation.kind, Kind::Read { .. }) && operation.start > first_return
            }),
        }
    }
}
