"""KeywordEnv, the tiny environment of the tests and the quick start: it satisfies the TextEnv protocol."""

from trl_aem.envs import TextEnv
from trl_aem.envs.keyword import KeywordEnv


def test_keyword_env_satisfies_the_protocol_and_its_expert_succeeds():
    env = KeywordEnv()
    assert isinstance(env, TextEnv)
    env.reset({"words": ["apple", "mug"]})
    total, result = 0.0, None
    while result is None or not result.done:
        result = env.step(env.expert_action())
        total += result.reward
    assert result.info["success"] and total == 2.0
