//! Moving the thread that runs vCPU 0 between the machine's CPUs, so that KVM puts the vCPU on
//! one physical CPU and loads it on another (vcpu_put/vcpu_load across CPUs). Only where the
//! runner is the VMM does the calling thread run the vCPU (its KVM_RUN); elsewhere the VMM's
//! own threads do, and moving this one would prove nothing.

use std::io;

use crate::vmm::VmmError;

/// The CPUs the calling thread may run on.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity fills it for this thread
    // (pid 0) and reads no more than the size given.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        set
    };
    // SAFETY: CPU_ISSET reads the set for indices below CPU_SETSIZE.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Let the calling thread run on `cpus` only.
fn pin_to(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes in it for indices below
    // CPU_SETSIZE, and sched_setaffinity reads no more than the size given.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus.iter().filter(|&&cpu| cpu < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    match result {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Run `step` on each of the first two CPUs the calling thread may use, in turn and back
/// again (four times), the thread's affinity restored after. Returns the CPUs in the order
/// used, or `None` (and `step` not run) where the thread may use only one.
pub fn on_each_cpu(
    mut step: impl FnMut() -> Result<(), VmmError>,
) -> Result<Option<Vec<usize>>, VmmError> {
    let affinity = |e: io::Error| VmmError::Host(format!("the vCPU thread's CPU affinity: {e}"));
    let allowed = allowed_cpus().map_err(affinity)?;
    let &[first, second, ..] = allowed.as_slice() else {
        return Ok(None);
    };
    let order = vec![first, second, first, second];
    let mut stepped = Ok(());
    for &cpu in &order {
        stepped = pin_to(&[cpu]).map_err(affinity).and_then(|()| step());
        if stepped.is_err() {
            break;
        }
    }
    pin_to(&allowed).map_err(affinity)?;
    stepped.map(|()| Some(order))
}
