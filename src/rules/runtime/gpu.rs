//! The GPUs a step was given, as Slurm names them, and their device files.

use std::path::PathBuf;

/// The NVIDIA control devices a GPU needs besides its own `/dev/nvidiaN`. A step with
/// GPUs gets those of them that exist on the node (the SPANK layer looks), as the
/// `containerEdits` of a CDI spec give them to podman.
pub const NVIDIA_CONTROL_DEVICES: [&str; 4] = [
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
];
/// The device node of the GPU with host index `index` (Slurm's `SLURM_STEP_GPUS`
/// numbering, the same index podman's CDI name `nvidia.com/gpu=N` uses).
pub fn gpu_device(index: u32) -> PathBuf {
    PathBuf::from(format!("/dev/nvidia{index}"))
}
/// The variable that holds the step's GPUs. The environment is the user's, so only a
/// variable slurmstepd's gres/gpu plugin always rewrites is trusted: for the batch
/// step `SLURM_JOB_GPUS` (set when the job has GPUs, removed otherwise; a user's
/// `SLURM_STEP_GPUS` survives there), for other steps `SLURM_STEP_GPUS` (set or
/// removed per step; a user's `SLURM_JOB_GPUS` survives there). Checked in the bed
/// with Slurm 26.05 and 24.11.
pub fn gpu_list_variable(is_batch: bool) -> &'static str {
    if is_batch {
        "SLURM_JOB_GPUS"
    } else {
        "SLURM_STEP_GPUS"
    }
}
/// Strict parse of Slurm's GPU index list (`SLURM_STEP_GPUS` / `SLURM_JOB_GPUS`,
/// e.g. `0,2`). Anything else (ranges, names, empty items) means no GPUs: a bad
/// value never becomes a flag.
pub fn parse_gpu_list(value: Option<&str>) -> Vec<u32> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in v.split(',') {
        if item.is_empty() || item.len() > 4 || !item.bytes().all(|b| b.is_ascii_digit()) {
            return Vec::new();
        }
        match item.parse::<u32>() {
            Ok(n) if !out.contains(&n) => out.push(n),
            Ok(_) => {}
            Err(_) => return Vec::new(),
        }
    }
    out
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn gpu_lists_are_parsed_strictly() {
        assert_eq!(parse_gpu_list(Some("0")), [0]);
        assert_eq!(parse_gpu_list(Some("0,2,2,3")), [0, 2, 3]);
        for bad in [
            None,
            Some(""),
            Some("0-3"),
            Some("0,,1"),
            Some("a"),
            Some("0, 1"),
            Some("99999"),
            Some("-1"),
        ] {
            assert!(parse_gpu_list(bad).is_empty(), "{bad:?}");
        }
    }
}
