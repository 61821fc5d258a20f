"""The environment contract's helpers: reading the action out of a response."""

from trl_aem.envs import extract_action


def test_extract_action():
    assert extract_action("think... <action> go to  desk 1 </action>") == "go to desk 1"
    assert extract_action("<action>a</action> then <ACTION>b</ACTION>") == "b"
    assert extract_action("no tags here") is None
    assert extract_action("<action>   </action>") is None
    assert extract_action("<answer>x</answer>", tag="answer") == "x"
