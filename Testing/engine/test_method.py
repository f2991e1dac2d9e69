"""Registration methods as compositions of a network's prediction and the pair optimisation (issue 12)."""

from __future__ import annotations

import pytest

from shmoareg.method import RegistrationMethod
from shmoareg.pipeline import RegistrationRequest
from shmoareg.protocol import DEFAULT_MODEL


@pytest.mark.parametrize("method, arguments", [
    (RegistrationMethod.network_then_refinement(), ["--model", DEFAULT_MODEL]),
    (RegistrationMethod.network_then_refinement("unet", 20), ["--model", "unet", "--refine-steps", "20"]),
    (RegistrationMethod.refinement_alone(), ["--model", "none"]),
    (RegistrationMethod.network_alone("rman"), ["--model", "rman", "--refine-steps", "0"]),
    (RegistrationMethod.affine_alone(), ["--model", "none", "--refine-steps", "0"]),
])
def test_each_composition_is_its_command_line_and_back(method, arguments):
    assert method.arguments() == arguments
    steps = int(arguments[3]) if len(arguments) > 2 else None
    assert RegistrationMethod.from_options(arguments[1], steps) == method
    assert RegistrationRequest("f", "m", "o", model=method.model, refine_steps=method.refine_steps).method == method


def test_steps_only_belong_to_a_refinement():
    with pytest.raises(ValueError, match="only when the method refines"):
        RegistrationMethod("unet", refine=False, steps=10)
    assert not RegistrationMethod.network_alone().refine and RegistrationMethod.refinement_alone().network is None
