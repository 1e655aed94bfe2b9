"""aiprod hookimpls of aiprod-pipelines (cheap to import: everything heavy is a string or deferred)."""

from __future__ import annotations

from aiprod_core import PipelineSpec, hookimpl


@hookimpl
def aiprod_register_pipelines():
    return [
        PipelineSpec(
            name="text-to-video",
            config_model="aiprod_pipelines.text_to_video:TextToVideoConfig",
            run="aiprod_pipelines.text_to_video:run",
            description="prompt → text encoder → video denoiser (→ x2 latent upsampler) → video autoencoder "
            "→ narration → mp4 (H.264 + AAC)",
        ),
        PipelineSpec(
            name="video-reconstruct",
            config_model="aiprod_pipelines.video_reconstruct:VideoReconstructConfig",
            run="aiprod_pipelines.video_reconstruct:run",
            description="mp4 → video autoencoder encode + decode → mp4, prints the PSNR",
        ),
    ]


@hookimpl
def aiprod_register_commands(cli):
    from aiprod_core.cli import LazyCommand
    from aiprod_pipelines.data_cli import data_group
    from aiprod_pipelines.serve import serve_command

    # eval imports numpy (0.2 s): loaded when `aiprod eval` runs, not for every command (issue 21)
    cli.add_command(LazyCommand("eval", "aiprod_pipelines.eval:eval_command", "Measure COMPONENT (a component "
                                "folder, or a text-to-video YAML) on DATA against its quality floor."))
    cli.add_command(serve_command, name="serve")
    cli.add_command(data_group, name="data")
