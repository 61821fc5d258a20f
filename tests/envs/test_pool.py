"""The fault-tolerant environment pool (threads, processes): parallel calls, kept slots, faults end only their slot."""

import time

import pytest

from trl_aem.envs import EnvCall, EnvContractError, EnvPool, StepResult
from trl_aem.envs.keyword import KeywordEnv
from trl_aem.envs.pool import call_env

from ..fake_envs import make_faulty_tasks


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_pool_runs_calls_in_parallel_and_keeps_slots(worker_type):
    pool = EnvPool(_SlowKeyword, worker_type=worker_type, max_workers=4)
    try:
        tasks = [{"words": ["apple", "mug"]} for _ in range(4)]
        resets = pool.run([EnvCall(k, "reset", t) for k, t in enumerate(tasks)])
        assert all(o.ok and "apple" in o.value for o in resets)
        started = time.monotonic()
        steps = pool.run([EnvCall(k, "step", "<action>apple</action>") for k in range(4)])
        elapsed = time.monotonic() - started
        assert all(o.ok and isinstance(o.value, StepResult) and o.value.reward == 1.0 for o in steps)
        assert elapsed < 4 * 0.3  # four 0.3 s steps overlapped
        # each slot kept its own episode state: the second word is now requested
        steps = pool.run([EnvCall(k, "step", "<action>mug</action>") for k in range(4)])
        assert all(o.value.done and o.value.info["success"] for o in steps)
    finally:
        pool.close()


class _SlowKeyword(KeywordEnv):
    def __init__(self):
        super().__init__(delay=0.3)


# A thread cannot survive os._exit: crash isolation is what process workers are for.
FAULT_CASES = [
    (w, f)
    for w in ("thread", "process")
    for f in ("raise", "hang", "crash", "bad_return")
    if (w, f) != ("thread", "crash")
]


@pytest.mark.parametrize("worker_type,fault", FAULT_CASES)
def test_faults_end_only_their_slot(worker_type, fault):
    pool = EnvPool(KeywordEnv, worker_type=worker_type, max_workers=8, timeout=1.5)
    try:
        tasks = make_faulty_tasks(fault)
        assert all(o.ok for o in pool.run([EnvCall(k, "reset", t) for k, t in enumerate(tasks)]))
        outcomes = pool.run([EnvCall(k, "step", "<action>apple</action>") for k in range(len(tasks))])
        expected = {"hang": "timeout", "bad_return": "contract"}.get(fault, "error")
        assert outcomes[2].status == expected and outcomes[2].error
        if fault == "bad_return":  # one line saying what to return
            assert outcomes[2].error.startswith("env.step must return trl_aem.envs.StepResult(") and "\n" not in (
                outcomes[2].error
            )
        assert all(o.ok for k, o in enumerate(outcomes) if k != 2)
        if fault in ("hang", "crash"):
            assert pool.replaced == 1
        # the faulted slot gets a working environment again
        again = pool.run([EnvCall(2, "reset", {"words": ["cup"]})])
        assert again[0].ok and "cup" in again[0].value
        assert pool.run([EnvCall(2, "step", "<action>cup</action>")])[0].value.info["success"]
    finally:
        pool.close()


def test_unpicklable_factory_is_a_clear_error_in_process_mode():
    with pytest.raises(TypeError, match="picklable"):
        EnvPool(lambda: KeywordEnv(), worker_type="process")
    with pytest.raises(ValueError, match="worker_type"):
        EnvPool(KeywordEnv, worker_type="fiber")


class _Gym4(KeywordEnv):
    def step(self, action):
        result = super().step(action)
        return result.observation, result.reward, result.done, None  # gym-like; info None


class _OddReturns(KeywordEnv):
    def expert_action(self):
        return ["not", "a", "string"]

    def admissible_actions(self):
        return "apple"  # a str, not a list of str


def test_call_env_is_the_one_contract_check():
    """Every caller (pool workers, demonstrations) checks returns through call_env: a 4-tuple is a StepResult with a
    float reward and a dict info; other types are one-line contract errors."""
    env = _Gym4()
    assert call_env(env, "reset", {"words": ["apple"]}).endswith("Say the word apple.")
    result = call_env(env, "step", "<action>apple</action>")
    assert result == StepResult("Done.", 1.0, True, {}) and isinstance(result.reward, float)
    odd = _OddReturns()
    odd.reset({"words": ["apple"]})
    for method, message in [
        (
            "expert_action",
            "env.expert_action must return the action as str (or None: no move), got list ['not', 'a', 'string']",
        ),
        ("admissible_actions", "env.admissible_actions must return a list of str, got 'apple'"),
    ]:
        with pytest.raises(EnvContractError) as raised:
            call_env(odd, method)
        assert str(raised.value) == message
    with pytest.raises(ValueError, match="unknown env method 'fly'"):
        call_env(env, "fly")


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_the_pool_coerces_a_gym_step_and_reports_a_reason(worker_type):
    pool = EnvPool(_Gym4, worker_type=worker_type, max_workers=2, timeout=30)
    try:
        pool.run(
            [EnvCall(0, "reset", {"words": ["apple"]}), EnvCall(1, "reset", {"words": ["apple"], "fault": "raise"})]
        )
        ok, fault = pool.run([EnvCall(0, "step", "<action>apple</action>"), EnvCall(1, "step", "x")])
        assert ok.ok and ok.value.info == {} and ok.value.done and ok.reason == ""
        assert fault.status == "error" and fault.reason == "RuntimeError: the environment broke"
        assert "\n" in fault.error  # the traceback stays in `error`, `reason` is its first line
    finally:
        pool.close()
