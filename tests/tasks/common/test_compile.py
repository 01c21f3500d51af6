"""torch.compile on every model kind (tiny random-weight models) gives the eager outputs; torch.export with
dynamic height/width runs right at sizes other than the example's. Slow (compiling takes minutes on CPU)."""
import pytest
import torch

from tasks.common import export as ex
from tests.tasks.common.test_export import build

pytestmark = pytest.mark.slow
KINDS = ["backbone", "segmentation", "depth", "classification", "detection", "detection_refine", "detection_two_stage"]


def _flat(out):
    if isinstance(out, dict):
        return [v for k, v in sorted(out.items()) if isinstance(v, torch.Tensor)]
    return [out]


@pytest.mark.parametrize("kind", KINDS)
def test_compile_matches_eager(kind):
    model = build(kind)
    compiled = torch.compile(model)
    for shape in [(2, 3, 96, 128), (1, 3, 101, 133)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            for a, b in zip(_flat(compiled(x)), _flat(model(x))):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_torch_export_dynamic_size(kind):
    model = build(kind)
    program, _ = ex.export_program(model, 96, 128)
    graph = ex.ExportGraph(model, ex.model_kind(model))
    for shape in [(1, 3, 133, 101), (3, 3, 70, 190)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            for a, b in zip(program.module()(x), graph(x)):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
