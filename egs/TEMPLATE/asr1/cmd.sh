# How parallel stages run their jobs (teacher soft labels, ...): see espnet_bertkd.recipe.bin.run_jobs.
#   local: background processes on this machine (default)
#   slurm: a Slurm array job per stage; put partition, GPUs, time limits in slurm_opts
cmd_backend=local
slurm_opts=""
