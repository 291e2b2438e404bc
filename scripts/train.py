"""Fine-tune one cell (model × dataset × PLW × seed) with the prompt-loss-weighted Alpaca recipe.

Resumes from the newest complete checkpoint in --checkpoints; writes the final model and train_log.parquet only
when training completes, then keeps hard links to them in --checkpoints instead of the checkpoints. One process
trains a cell at a time (plw.cell_guard): a second waits, and one for a run that finished hands its result back.
SIGTERM or SIGUSR1, or the job's Slurm time limit coming near, saves a checkpoint and stops, to be resumed by the
retry. With --gpus N > 1 on a machine with CUDA, it re-launches itself under torchrun, one process per GPU; those
shard the model with FSDP2 where training.fsdp says so, and it refuses to train them unsharded where FSDP does not
take. In a Slurm job on several nodes (PLW_NODE_TASKS, set by the train rule), it starts one task per node with srun
once it holds the cell, each a torchrun of its node's processes, all joined at a c10d rendezvous (docs/slurm.md).
"""

import argparse
import json
import os
import shlex
import sys
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="normalized dataset Parquet")
    parser.add_argument("--base-model", required=True, help="Hub id or directory")
    parser.add_argument("--model-spec", default="{}", help="the model's config entry, as JSON")
    parser.add_argument("--plw", required=True, type=float)
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--settings", required=True, help="the config's training section, as JSON")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs of the job (the rule's gpu resource)")
    parser.add_argument("--checkpoints", required=True)
    parser.add_argument("--tracking", help="directory of the trackers in training.report_to (default: beside "
                                           "--checkpoints)")
    parser.add_argument("--run-name", help="the trackers' name of the run (default: the output directory)")
    parser.add_argument("--output-model", required=True)
    parser.add_argument("--output-log", required=True)
    args = parser.parse_args(argv)
    if not 0 <= args.plw <= 1:
        parser.error(f"--plw {args.plw}: the prompt-loss weight must lie in [0, 1]")
    return args


# Several nodes (docs/slurm.md): the train rule sets NODE_TASKS, the srun command that starts one task per node in
# the job's allocation; the job's first process, once it holds the cell, sets RENDEZVOUS for those tasks and execs it.
NODE_TASKS = "PLW_NODE_TASKS"
RENDEZVOUS = "PLW_RENDEZVOUS"


def this_command() -> list[str]:
    """This process's command line as it was started (`python scripts/train.py ...`, or a wrapper of train.py such
    as tests/fsdp_train.py), for a task or a rank to run again."""
    return [sys.executable, *sys.orig_argv[1:]]


def launch_per_node() -> None:
    """With NODE_TASKS (several nodes), exec it: srun starts this same command once per node; this process, the srun
    client on the job's first node, keeps holding the cell for all of them. The tasks' torchruns meet at a c10d
    rendezvous on this node, on a port free here."""
    command = os.environ.get(NODE_TASKS)
    if not command or "LOCAL_RANK" in os.environ or RENDEZVOUS in os.environ:  # one node, or a rank or a task
        return
    if "SLURM_JOB_ID" not in os.environ:
        raise SystemExit(f"{NODE_TASKS}={command!r}: training on several nodes runs in a Slurm job (the slurm "
                         "executor); on this machine, leave PLW_NODES unset")
    import socket

    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    os.environ[RENDEZVOUS] = f"{socket.gethostname()}:{port}"
    print(f"one task per node: {command}; rendezvous at {os.environ[RENDEZVOUS]}", flush=True)
    tasks = shlex.split(command)
    os.execvp(tasks[0], [*tasks, *this_command()])


def relaunch_per_gpu(gpus: int) -> None:
    """One process per GPU of the job: exec torchrun unless already inside a distributed launch. One node: torchrun
    --standalone. A node's task of a job on several nodes (RENDEZVOUS set): a torchrun of the node's processes (one
    per GPU, or one without CUDA) that joins the other nodes' at the c10d rendezvous; the job's tasks are the nodes,
    its id the rendezvous's."""
    import torch

    processes = min(gpus, torch.cuda.device_count())
    if "LOCAL_RANK" in os.environ:
        return
    if RENDEZVOUS in os.environ:
        # the nodes' tasks start when they start (PyTorch imported from a slow file system): each waits for the
        # first node's rendezvous store as long as the rendezvous waits for the nodes (its join_timeout, 600 s)
        torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={os.environ['SLURM_NTASKS']}",
                    f"--nproc-per-node={max(processes, 1)}", "--rdzv-backend=c10d",
                    f"--rdzv-endpoint={os.environ[RENDEZVOUS]}", f"--rdzv-id={os.environ['SLURM_JOB_ID']}",
                    "--rdzv-conf=read_timeout=600"]
        os.execv(sys.executable, [*torchrun, "--no-python", *this_command()])
    if processes > 1:
        os.execvp("torchrun", ["torchrun", "--standalone", f"--nproc_per_node={processes}", *sys.argv])


# The config's training.fsdp, the option string of Alpaca's (and the paper's) command line, as FSDP2's choice:
# full_shard gathers each layer's parameters for its forward and again for its backward (ZeRO-3), shard_grad_op
# keeps them gathered from the forward to the backward (ZeRO-2's memory, no second gathering)
RESHARD_AFTER_FORWARD = {"full_shard auto_wrap": True, "shard_grad_op auto_wrap": False}


def fsdp_config(settings: dict) -> dict:
    """Transformers' fsdp_config (with fsdp=True) for the config's training.fsdp: FSDP2 (PyTorch's fully_shard), a
    unit per decoder layer, sharded checkpoints (each rank writes its shard: no gathering of a 7B model onto rank 0
    every save). Transformers deprecates the option string (for removal in v5.20) for this form."""
    config = {"version": 2, "reshard_after_forward": RESHARD_AFTER_FORWARD[settings["fsdp"]],
              "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "state_dict_type": "SHARDED_STATE_DICT",
              "activation_checkpointing": settings["gradient_checkpointing"]}  # FSDP's, without a second gather
    if settings["fsdp_transformer_layer_cls"]:  # else the model's own decoder layer (its _no_split_modules)
        config["transformer_layer_cls_to_wrap"] = [settings["fsdp_transformer_layer_cls"]]
    return config


def last_complete_checkpoint(directory: str) -> str | None:
    """The newest checkpoint-N with its trainer_state.json, which the Trainer writes last: a job killed while
    saving leaves a partial checkpoint, and resuming from it would fail every retry."""
    complete = [path for path in Path(directory).glob("checkpoint-*") if (path / "trainer_state.json").is_file()]
    return str(max(complete, key=lambda path: int(path.name.split("-")[-1]))) if complete else None


def run_fingerprint_of(args) -> str:
    """The fingerprint of this run: not of where it writes, nor of the GPUs it gets (a retry may get others)."""
    from plw.cell_guard import run_fingerprint

    where = ("checkpoints", "tracking", "run_name", "output_model", "output_log", "gpus")
    return run_fingerprint({key: value for key, value in vars(args).items() if key not in where}, args.data)


def tracking_run_name(args, settings: dict) -> str:
    """The run's name in the trackers: the cell (the rule names it by model, dataset, PLW and seed), and its
    completion weight where that is not the paper's 1."""
    name = args.run_name or str(Path(args.output_model).parent)
    weight = settings["completion_weight"]
    return name if weight == 1 else f"{name} (completion weight {weight:g})"


def take_cell(args) -> bool:
    """Hold the cell (waiting for another process that trains it); False when this same run finished before and
    its result was handed back, so nothing is left to train."""
    from plw.cell_guard import discard_other_runs, hold_cell_lock, restore_finished

    hold_cell_lock(args.checkpoints)
    fingerprint = run_fingerprint_of(args)
    if restore_finished(args.checkpoints, fingerprint, args.output_model, args.output_log):
        print(f"this run (same arguments, data, code and packages) finished before: its model and log are handed "
              f"back from {args.checkpoints}", flush=True)
        return False
    discard_other_runs(args.checkpoints, fingerprint)
    return True


def main(args) -> None:
    import pandas as pd
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, TrainingArguments, set_seed
    from transformers.utils import is_torch_tf32_available

    from plw.attention import default_attention, packed_row_length, register_packed_sdpa
    from plw.cell_guard import keep_finished, recorded_fingerprint
    from plw.io import atomic_path, write_parquet
    from plw.preemption import SaveAndStop, slurm_job_end
    from plw.provenance import code_version
    from plw.tokenize import add_missing_special_tokens, load_tokenizer, missing_bos_note, tokenize_record
    from plw.trainer import PromptLossWeightTrainer, WeightedCollator, compile_decoder_layers, sharding

    settings = json.loads(args.settings)
    spec = json.loads(args.model_spec)
    set_seed(args.seed)
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    per_step = settings["per_device_batch_size"] * world_size
    if settings["global_batch_size"] % per_step:
        raise SystemExit(f"training.global_batch_size {settings['global_batch_size']} is not a multiple of "
                         f"per_device_batch_size {settings['per_device_batch_size']} x {world_size} processes")

    records = pd.read_parquet(args.data).to_dict("records")
    load = dict(revision=spec.get("revision"), trust_remote_code=spec.get("trust_remote_code", False))
    tokenizer = load_tokenizer(args.base_model, model_max_length=settings["max_length"], **load)
    attention = settings["attn_implementation"] or default_attention(settings["packing"])
    register_packed_sdpa()
    # saved in training.save_dtype, else in the base model's own dtype (the one its evaluation uses)
    save_dtype = (getattr(torch, settings["save_dtype"]) if settings["save_dtype"]
                  else AutoConfig.from_pretrained(args.base_model, **load).dtype or torch.float32)
    # fp32 master weights, as Alpaca's (Transformers 5 would load LLaMA checkpoints in their fp16); bf16 computes
    model = AutoModelForCausalLM.from_pretrained(args.base_model, attn_implementation=attention,
                                                 dtype=torch.float32, **load)
    added = add_missing_special_tokens(tokenizer, model)
    if added:
        print(f"added the special tokens the tokenizer lacked, as Alpaca does: {', '.join(added)}", flush=True)
    bos_note = missing_bos_note(tokenizer, model.config.bos_token_id)
    if bos_note:
        print(f"note: {bos_note}", flush=True)
    if settings["lora"]["enabled"]:
        from peft import LoraConfig, get_peft_model

        lora = settings["lora"]
        model = get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                                 target_modules=lora["target_modules"], task_type="CAUSAL_LM"))
    if settings["compile"] and torch.cuda.is_available():
        compile_decoder_layers(model)
    elif settings["compile"]:  # on CPU, packed_sdpa's per-sequence loop would recompile for every batch
        print("training.compile: not without CUDA, the layers run eagerly", flush=True)
    # Alpaca's --tf32 True; Transformers refuses it where no GPU has TF32, so there it is left unset, and said
    tf32 = settings["tf32"] if is_torch_tf32_available() else None
    if settings["tf32"] and tf32 is None:
        print("training.tf32: no GPU with TF32 here, matmuls run in full precision", flush=True)
    train_dataset = [tokenize_record(record, tokenizer, args.plw, settings["max_length"],
                                     settings["completion_weight"]) for record in records]

    # LoRA trains a small adapter on a frozen base that fits each GPU: data parallel, not sharded, so that rank 0
    # can merge the adapter into the base model at the end
    fsdp = bool(settings["fsdp"]) and world_size > 1 and not settings["lora"]["enabled"]
    training_args = TrainingArguments(
        output_dir=args.checkpoints,
        num_train_epochs=settings["epochs"],
        max_steps=settings["max_steps"],
        learning_rate=settings["learning_rate"],
        per_device_train_batch_size=settings["per_device_batch_size"],
        gradient_accumulation_steps=settings["global_batch_size"] // per_step,
        warmup_steps=settings["warmup_ratio"],  # a float in [0, 1) is a ratio of all steps (the schema keeps it < 1)
        lr_scheduler_type=settings["lr_scheduler_type"],
        weight_decay=settings["weight_decay"],
        bf16=settings["bf16"],
        tf32=tf32,
        activation_checkpointing=settings["gradient_checkpointing"] and not fsdp,
        dataloader_pin_memory=torch.cuda.is_available(),
        # ranks without a GPU train on their CPUs over gloo (else Transformers would train each rank alone)
        use_cpu=world_size > 1 and not torch.cuda.is_available(),
        fsdp=fsdp,
        fsdp_config=fsdp_config(settings) if fsdp else None,
        save_strategy="steps",
        save_steps=settings["save_steps"],
        save_total_limit=1,
        logging_steps=settings["logging_steps"],
        seed=args.seed,
        data_seed=args.seed,
        remove_unused_columns=False,
        report_to=settings["report_to"],
        run_name=tracking_run_name(args, settings),
        disable_tqdm=True,
        average_tokens_across_devices=True,
    )
    if settings["report_to"]:  # offline: compute nodes often have no internet; synced later where wanted
        tracking = args.tracking or f"{args.checkpoints.rstrip('/')}.tracking"
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", tracking)
        os.environ.setdefault("WANDB_DIR", tracking)
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("MLFLOW_TRACKING_URI", Path(tracking, "mlruns").resolve().as_uri())
    trainer = PromptLossWeightTrainer(
        model=model, args=training_args, train_dataset=train_dataset,
        data_collator=WeightedCollator(tokenizer.pad_token_id, packing=settings["packing"],
                                      row_length=packed_row_length(attention, settings["max_length"])),
        loss_normalization=settings["loss_normalization"], loss_chunk_size=settings["loss_chunk_size"])
    stop = SaveAndStop(slurm_job_end(), margin_seconds=60 * settings["time_limit_margin_minutes"])
    trainer.add_callback(stop)

    # Accelerate takes the FSDP plugin on GPUs only: elsewhere its ranks would silently train unsharded (DDP)
    if fsdp and not trainer.is_fsdp_enabled:
        raise SystemExit(f"training.fsdp {settings['fsdp']!r}: Accelerate did not enable FSDP for these "
                         f"{world_size} processes (it does on GPUs only); not training them unsharded")
    if trainer.is_fsdp_enabled and trainer.is_world_process_zero():
        plugin = trainer.accelerator.state.fsdp_plugin
        print(f"{world_size} processes, FSDP{plugin.fsdp_version} ({settings['fsdp']}), {plugin.state_dict_type.name}"
              " checkpoints", flush=True)
    elif world_size > 1 and trainer.is_world_process_zero():
        print(f"{world_size} processes, data parallel", flush=True)

    checkpoint = last_complete_checkpoint(args.checkpoints)
    print(f"resuming from {checkpoint}" if checkpoint else "starting from the base model", flush=True)
    stop.install()
    trainer.train(resume_from_checkpoint=checkpoint)
    stop.uninstall()
    if stop.reason:
        raise SystemExit(f"stopped on {stop.reason} after saving checkpoint-{trainer.state.global_step}; "
                         "a rerun resumes from it")
    if trainer.is_fsdp_enabled:
        # one write, newline included: print's two writes let the ranks' lines run into each other in the log
        print(f"rank {trainer.args.process_index}: {sharding(trainer.model)}\n", end="", flush=True)

    # Under FSDP each rank holds a shard: gathering the full weights (onto rank 0) is a collective of all ranks.
    state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.is_world_process_zero():
        log = pd.DataFrame([entry for entry in trainer.state.log_history if "loss" in entry])
        log = log[["step", "loss", "learning_rate", "grad_norm", "tokens", "weight_sum"]].assign(
            gpus=world_size if torch.cuda.is_available() else 0, **code_version())
        final = trainer.accelerator.unwrap_model(trainer.model)
        with atomic_path(args.output_model) as tmp:
            if settings["lora"]["enabled"]:
                final.merge_and_unload().to(save_dtype).save_pretrained(tmp)
            else:
                final.config.dtype = save_dtype
                final.save_pretrained(tmp, state_dict={name: tensor.to(save_dtype) if tensor.is_floating_point()
                                                       else tensor for name, tensor in state_dict.items()})
            tokenizer.save_pretrained(tmp)
        write_parquet(log, args.output_log)
        # under the fingerprint that take_cell recorded before training (code edited since made none of this), or,
        # for a torchrun started by hand, without take_cell, this run's
        fingerprint = recorded_fingerprint(args.checkpoints) or run_fingerprint_of(args)
        keep_finished(args.checkpoints, fingerprint, args.output_model, args.output_log)
        print(f"final loss {log['loss'].iloc[-1]:.4f} after {int(log['step'].iloc[-1])} steps")


if __name__ == "__main__":
    arguments = parse_args()
    # The job's first process holds the cell; torchrun (one node) or srun (several), exec'd in it, keeps holding it
    # for all ranks. It hands a finished run back before starting anything: no node waits for a rendezvous then.
    # The ranks (LOCAL_RANK) and the nodes' tasks (RENDEZVOUS) run under the first process, which holds the cell.
    if "LOCAL_RANK" in os.environ or RENDEZVOUS in os.environ or take_cell(arguments):
        launch_per_node()
        relaunch_per_gpu(arguments.gpus)
        main(arguments)
