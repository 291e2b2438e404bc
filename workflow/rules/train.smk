"""Fine-tuning: one job per cell (model × dataset × completion weight × PLW × seed), one process per GPU of the job."""


rule train:
    input:
        data=training_data_input,
        base=base_model_input,
        prefetched=prefetched_model,
    output:
        model=directory(f"{RESULTS}/models/{CELL}/model"),
        log=f"{RESULTS}/models/{CELL}/train_log.parquet",
    log:
        f"{LOGS}/train/{CELL}.log",
    benchmark:
        f"{COSTS}/train/{CELL}.tsv"
    params:
        # Checkpoints are no declared output: Snakemake would delete them when a job fails, and a rerun
        # must resume from them.
        checkpoints=f"{RESULTS}/checkpoints/{CELL}",
        tracking=f"{RESULTS}/tracking/{CELL}",
        base=base_model_path,
        model_spec=lambda wildcards: as_json(config["models"][wildcards.model]),
        # the cell's completion weight in place of the config's list
        settings=lambda wildcards: as_json({**config["training"], "completion_weight": COMPLETION_WEIGHTS[wildcards.cw]}),
        # GPUs per node: the job's (one node) or the profile's gpus_per_node (several)
        gpus=lambda wildcards, resources: resources.get("gpu", 0) or resources.get("gpus_per_node", 0),
        # The command's environment: the Hub offline (jobs read the cache that the prefetch rules filled), and for
        # a job on several nodes (the workflow profile's PLW_NODES: the resources nodes, tasks and mpi of the slurm
        # executor plugin's MPI jobs) PLW_NODE_TASKS, the srun that starts one task per node, a step of the job's
        # allocation with all of its GPUs (srun's default). train.py, run by Snakemake on the job's first node,
        # takes the cell, then execs it; each task execs a torchrun of its node's processes (docs/slurm.md). An
        # environment variable, not an argument: the run's fingerprint leaves out where it runs.
        environment=lambda wildcards, resources, threads: (
            f"{OFFLINE} PLW_NODE_TASKS="
            + shlex.quote(f"{resources.mpi} --nodes={resources.get('nodes', 1)} --ntasks={resources.tasks}"
                          f" --cpus-per-task={resources.get('cpus_per_task') or threads} --kill-on-bad-exit=1")
            if resources.get("mpi")
            else OFFLINE
        ),
    threads: 2
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.environment} python scripts/train.py --data {input.data:q} --base-model {params.base:q}"
        " --model-spec {params.model_spec:q} --plw {wildcards.plw} --seed {wildcards.seed}"
        " --settings {params.settings:q} --gpus {params.gpus} --checkpoints {params.checkpoints:q}"
        " --tracking {params.tracking:q} --run-name {wildcards.model}/{wildcards.dataset}/plw-{wildcards.plw}/seed-{wildcards.seed}"
        " --output-model {output.model:q} --output-log {output.log:q} > {log:q} 2>&1"


onstart:
    # only where the jobs go to Slurm, and before any is submitted: the trainings found belong to an earlier head
    if getattr(workflow.executor_plugin, "name", None) == "slurm":
        from plw.slurm_orphans import wait_for_orphaned_trainings

        wait_for_orphaned_trainings(os.getcwd())
