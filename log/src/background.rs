//! Background work at the lowest CPU priority: the integrity check's scans run on a thread of
//! their own at nice 19, so appends, the indexer and reads beside them keep their pace, and an
//! idle machine still runs them at full speed.

/// Runs `work` on a new thread at the lowest CPU priority and waits for it. Runs it inline when
/// no thread can be started; a panic inside it is resumed here, as if it had run inline.
pub fn at_lowest_priority<T: Send>(name: &str, work: &(dyn Fn() -> T + Sync)) -> T {
    std::thread::scope(|s| {
        let spawned = std::thread::Builder::new().name(name.into()).spawn_scoped(s, || {
            lowest_cpu_priority();
            work()
        });
        match spawned {
            Ok(thread) => thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => work(),
        }
    })
}

/// Gives the calling thread the lowest CPU priority for the rest of its life: nice 19 and the
/// `SCHED_IDLE` policy (it runs only when no other thread wants the CPU; on Linux both belong
/// to one thread, and an unprivileged thread may take both). Best effort: a failure leaves it
/// as it was. Measured beside a single appender on 2 cores: nice 19 alone kept 45 % of the
/// appends' pace, with `SCHED_IDLE` 74 %.
fn lowest_cpu_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority and sched_setscheduler take plain integers and a pointer to a
    // parameter that lives across the call; `who`/`pid` 0 is the calling thread on Linux.
    unsafe {
        let _ = libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        let param = libc::sched_param { sched_priority: 0 };
        let _ = libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}
