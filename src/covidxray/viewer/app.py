"""The Gradio page of ``covidxray serve RUN``: upload a chest X-ray, see what the run makes of it.

Layout: the upload (drag and drop; a few of the run's test images one click away) and the method
choice; the calibrated probabilities with the COVID-19 decision and what its threshold did on the
test split; the heat map over the X-ray (with the lung contour when known); warnings when the input
is not what the model was trained on; and the run's model card beside them. A file that cannot be
used shows the reason ``covidxray index`` gives, never a traceback.

Offline by construction: Gradio's analytics and version check are off (``GRADIO_ANALYTICS_ENABLED``
set before Gradio is imported, and ``analytics_enabled=False``), the theme uses local and system
fonts only, no share link, no server-side rendering (no Node process).
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path

from covidxray.data.imageio import ImageReadError
from covidxray.viewer.inputs import upload_error
from covidxray.viewer.session import Analysis, Viewer

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

#: Element ids the browser test reads.
IDS = {"file": "upload", "method": "method", "probs": "probs", "heatmap": "heatmap", "status": "status",
       "card": "model-card"}


def probs_html(classes: list[str], a: Analysis | None) -> str:
    """The probabilities as an HTML table (``span.prob`` with ``data-class`` for each class)."""
    if a is None:
        return "<p>Upload a chest X-ray to see the calibrated probabilities.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td><span class='prob' data-class='{html.escape(c)}'>{a.probs[c]:.4f}</span>"
        f"</td><td style='width:10em'><div style='background:#4a7;height:0.8em;width:{100 * a.probs[c]:.0f}%'></div></td></tr>"
        for c in classes)
    return (f"<table><tr><th>class</th><th>calibrated p</th><th></th></tr>{rows}</table>"
            f"<p><b>prediction:</b> {html.escape(a.prediction)} &nbsp; <b>decision:</b> {html.escape(a.decision)}</p>")


def status_markdown(a: Analysis) -> str:
    """Warnings, conversion notes and the lung-contour source of an analysis."""
    parts = [f"**{a.name}**: heat map by `{a.method}`"]
    parts += [f"- warning: {w}" for w in a.warnings] or ["- no input warnings"]
    parts += [f"- note: {n}" for n in a.notes]
    if a.lungs:
        parts.append(f"- {a.lungs}")
    if a.ood_score is not None:
        parts.append(f"- out-of-distribution score {a.ood_score:.2f}")
    return "\n".join(parts)


def handler(viewer: Viewer) -> Callable:
    """``(file, method) -> (probs html, overlay, status markdown)`` for the page; errors become text."""

    def run(file, method):
        if not file:
            return probs_html(viewer.classes, None), None, ""
        path = file if isinstance(file, str) else getattr(file, "name", str(file))
        try:
            a = viewer.analyse(path, method or None)
        except ImageReadError as err:
            return probs_html(viewer.classes, None), None, f"**{upload_error(err)}**"
        except Exception as err:  # the page shows a reason, never a traceback
            return probs_html(viewer.classes, None), None, f"**could not analyse {Path(path).name}: {err}**"
        return probs_html(viewer.classes, a), a.overlay, status_markdown(a)

    return run


def header_markdown(viewer: Viewer) -> str:
    """Run name, decision rule, its test numbers, the default method's reason and load notes."""
    lines = [f"## covidxray viewer: `{viewer.run.name}`",
             f"- decision: {viewer.threshold_line}", f"- {viewer.test_line}",
             f"- default heat map: {viewer.method_reason}", f"- {viewer.segmenter_note}"]
    lines += [f"- note: {n}" for n in viewer.notes + ([viewer.reference.note] if viewer.reference.note else [])]
    lines.append("- research software: not a diagnostic device")
    return "\n".join(lines)


def build(viewer: Viewer):
    """The ``gr.Blocks`` page for a loaded :class:`Viewer`."""
    import gradio as gr

    fn = handler(viewer)
    with gr.Blocks(title=f"covidxray: {viewer.run.name}", analytics_enabled=False) as page:
        gr.Markdown(header_markdown(viewer))
        with gr.Row():
            with gr.Column(scale=2):
                upload = gr.File(label="Chest X-ray (PNG, JPEG, BMP, TIFF, DICOM): drop it here", type="filepath",
                                 elem_id=IDS["file"])
                method = gr.Dropdown(viewer.methods, value=viewer.default_method, label="heat-map method",
                                     elem_id=IDS["method"])
                if viewer.examples:
                    gr.Examples([[p] for p in viewer.examples], inputs=[upload],
                                label="examples from the run's test split")
                probs = gr.HTML(probs_html(viewer.classes, None), elem_id=IDS["probs"])
            with gr.Column(scale=2):
                heat = gr.Image(label="heat map over the model's input", type="numpy", interactive=False,
                                elem_id=IDS["heatmap"])
                status = gr.Markdown(elem_id=IDS["status"])
            with gr.Column(scale=1):
                gr.Markdown(viewer.card, elem_id=IDS["card"])
        upload.change(fn, [upload, method], [probs, heat, status])
        method.change(fn, [upload, method], [probs, heat, status])
    return page


def theme():
    """Gradio's default theme with system fonts only (no font download)."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 7860, block: bool = True,
          log: Callable[[str], None] = print):
    """Load a run and serve its page.

    Args:
        run_dir: Run folder.
        host: Interface to listen on.
        port: TCP port.
        block: Wait until interrupted (False: return at once, for tests and scripts).
        log: Where loading messages go.

    Returns:
        ``(page, url)``; ``page.close()`` stops the server.
    """
    viewer = Viewer(run_dir, log=log)
    page = build(viewer)
    allowed = sorted({str(Path(p).parent) for p in viewer.examples})
    _, url, _ = page.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True,
                            quiet=True, ssr_mode=False, allowed_paths=allowed, theme=theme(), footer_links=[])
    log(f"covidxray viewer on {url} (Ctrl+C stops it)")
    if block:
        page.block_thread()
    return page, url
