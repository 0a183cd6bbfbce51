import pytest

from kernel.lifecycle import ALLOWED, ModelState, TransitionError, after_gate, check_transition, state_of

S = ModelState


def test_the_release_path_is_allowed():
    state = S.REGISTERED
    for nxt in (S.APPROVED, S.CANARY, S.SERVING, S.RETIRED, S.SERVING, S.ROLLED_BACK):
        state = check_transition(state, nxt)
    assert state is S.ROLLED_BACK


@pytest.mark.parametrize("current,target", [
    (S.REGISTERED, S.SERVING), (S.REJECTED, S.SERVING), (S.REJECTED, S.CANARY),
    (S.ABANDONED, S.APPROVED), (S.SERVING, S.APPROVED), (S.REGISTERED, S.CANARY),
])
def test_forbidden_steps_name_what_is_allowed(current, target):
    with pytest.raises(TransitionError) as err:
        check_transition(current, target, "t-v3")
    msg = str(err.value)
    assert "t-v3" in msg and current.value in msg and target.value in msg
    for allowed in ALLOWED[current]:
        assert allowed.value in msg


def test_promoting_an_unapproved_version_names_the_gate():
    with pytest.raises(TransitionError, match="only a gate-approved version can be promoted"):
        check_transition("rejected", "serving")


def test_legacy_statuses_read_as_todays_states():
    assert state_of("candidate") is S.REGISTERED and state_of("promoted") is S.SERVING
    assert check_transition("promoted", "retired") is S.RETIRED
    with pytest.raises(TransitionError, match="unknown model status"):
        state_of("shipped")


def test_a_gate_verdict_never_demotes_a_deployed_version():
    assert after_gate("registered", True) is S.APPROVED
    assert after_gate("registered", False) is S.REJECTED
    assert after_gate("rejected", True) is S.APPROVED
    for deployed in (S.CANARY, S.SERVING, S.RETIRED, S.ROLLED_BACK):
        assert after_gate(deployed, False) is deployed
    with pytest.raises(TransitionError):
        after_gate("abandoned", True)
