//! `sim`: runs seeds of the deterministic simulator. See the `sim` crate
//! docs for how to replay a seed.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

/// `println!` that ends the process quietly when stdout is closed
/// (`sim ... | head`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}
use sim::{Options, Profile, Report};

/// bftd's deterministic simulator.
#[derive(Debug, Parser)]
#[command(
    name = "sim",
    about = "bftd deterministic simulator: one seed drives everything"
)]
struct Cli {
    /// Number of seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of a bulk run.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run exactly this seed (twice, asserting equal trace hashes).
    #[arg(long)]
    seed: Option<u64>,
    /// Print every event of the run.
    #[arg(long)]
    verbose: bool,
    /// Cap on the whole run (safety + liveness phase), ticks.
    #[arg(long)]
    max_ticks: Option<u64>,
    /// Fault profile: default (what must stay live today) or full.
    #[arg(long, default_value = "default")]
    profile: Profile,
    /// Upper bound of operations per simulated client.
    #[arg(long, default_value_t = Options::default().ops_per_client_max)]
    ops: u32,
    /// Count expected liveness failures (diagnosed as open control bugs,
    /// `sim::diagnosis`) as violations too.
    #[arg(long)]
    strict: bool,
    /// Run every seed twice and compare trace hashes (single seeds always do).
    #[arg(long)]
    twice: bool,
    /// Also print the runs whose only failures are expected.
    #[arg(long)]
    show_expected: bool,
}

fn print_report(r: &Report, strict: bool) {
    let failed = !r.passed() || (strict && !r.violations.is_empty());
    if failed {
        say!("FAIL seed {}: {}", r.seed, r.summary);
    } else {
        say!("seed {}: {}", r.seed, r.summary);
    }
    for v in &r.violations {
        let tag = if r.is_expected(v) && !strict {
            " (expected: open control bug)"
        } else {
            ""
        };
        say!("  {v}{tag}");
    }
    if !r.causes.is_empty() {
        let causes: Vec<&str> = r.causes.iter().map(|c| c.label()).collect();
        say!("  diagnosis: {}", causes.join("; "));
    }
    if !r.known_gaps.is_empty() {
        say!(
            "  faults that can hit known gaps: {}",
            r.known_gaps.join("; ")
        );
    }
    if failed {
        say!("  replay: {}", r.replay_command());
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli
        .max_ticks
        .is_some_and(|t| t < sim::params::MAX_TICKS_MIN)
    {
        eprintln!(
            "--max-ticks must be at least {}",
            sim::params::MAX_TICKS_MIN
        );
        return ExitCode::FAILURE;
    }
    sim::install_panic_hook();
    let opts = Options {
        profile: cli.profile,
        ops_per_client_max: cli.ops,
        max_ticks: cli.max_ticks,
        verbose: cli.verbose,
    };
    if let Some(seed) = cli.seed {
        let r = sim::run_seed(seed, &opts);
        let again = sim::run_seed(
            seed,
            &Options {
                verbose: false,
                ..opts.clone()
            },
        );
        print_report(&r, cli.strict);
        let s = &r.stats;
        say!(
            "  ticks={} decisions={} ops={}/{} (indeterminate {}) regency<={} syncs={}\n  checkpoints taken={} installed={} bad={} splits={} transfers={} (decisions {}) restarts={} (recovered decisions {})\n  net={:?}\n  refused={:?}\n  byzantine={:?}\n  trace hash {}",
            s.ticks,
            s.decisions,
            s.ops_completed,
            s.ops_called,
            s.ops_indeterminate,
            s.regency_max,
            s.syncs_applied,
            s.checkpoints_taken,
            s.checkpoints_installed,
            s.bad_checkpoints,
            s.checkpoint_splits,
            s.transfers_started,
            s.transfer_decisions,
            s.restarts,
            s.recovered_decisions,
            s.net,
            s.refused,
            s.byzantine,
            r.trace_hash
        );
        assert_eq!(
            r.trace_hash, again.trace_hash,
            "seed {seed} did not replay exactly"
        );
        let failed = !r.passed() || (cli.strict && !r.violations.is_empty());
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }

    let started = Instant::now();
    let progress_every = (cli.seeds / 20).max(1);
    let (mut failed, mut expected, mut decisions, mut ops) = (0u64, 0u64, 0u64, 0usize);
    let (mut changed, mut installs, mut restarts, mut transfers) = (0u64, 0u64, 0u64, 0u64);
    let mut by_cause: std::collections::BTreeMap<&'static str, (u64, Vec<u64>)> =
        std::collections::BTreeMap::new();
    for (i, seed) in (cli.start..cli.start.saturating_add(cli.seeds)).enumerate() {
        let r = sim::run_seed(seed, &opts);
        if cli.twice {
            let again = sim::run_seed(seed, &opts);
            assert_eq!(
                r.trace_hash, again.trace_hash,
                "seed {seed} did not replay exactly"
            );
        }
        decisions += r.stats.decisions;
        ops += r.stats.ops_completed;
        changed += u64::from(r.stats.regency_max > 0);
        installs += r.stats.checkpoints_installed;
        restarts += r.stats.restarts;
        transfers += r.stats.transfers_started;
        for c in &r.causes {
            let e = by_cause.entry(c.label()).or_default();
            e.0 += 1;
            if e.1.len() < 8 {
                e.1.push(seed);
            }
        }
        let bad = !r.passed() || (cli.strict && !r.violations.is_empty());
        if bad {
            failed += 1;
            print_report(&r, cli.strict);
        } else if !r.violations.is_empty() {
            expected += 1;
            if cli.verbose || cli.show_expected {
                print_report(&r, cli.strict);
            }
        }
        let done = i as u64 + 1;
        #[allow(clippy::manual_is_multiple_of)] // rust-version 1.80
        if done % progress_every == 0 {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "  {done}/{} seeds, {failed} failing, {:.1} seeds/s",
                cli.seeds,
                done as f64 / secs.max(1e-9)
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    say!(
        "sim: {} seeds from {} ({:?} profile): {failed} with unexpected violations, {expected} with only expected liveness failures (open control bugs); {decisions} decisions, {ops} client ops; {changed} seeds changed leader, {restarts} restarts, {transfers} state transfers, {installs} checkpoints installed; {:.1}s, {:.1} seeds/s",
        cli.seeds,
        cli.start,
        cli.profile,
        secs,
        cli.seeds as f64 / secs.max(1e-9)
    );
    for (label, (count, seeds)) in &by_cause {
        say!("  liveness diagnosis {label}: {count} seeds, e.g. {seeds:?}");
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
