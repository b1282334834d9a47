"""The one error hierarchy for rewards. It imports nothing of distgfn's, so the reward
package, the oracle server and its client all import it and never each other's errors.

    RewardError(ValueError)            the run stops: too many objects failed, or a reward
                                       that must never fail an object did
    RewardServiceError(RuntimeError)   the service failed, not one object's reward: propagates
      RewardUnavailable                down or restarting: the run waits (reward.unavailable_wait_s)
      OracleError                      a remote call failed (address, status code, details)
        OracleDeadline                 past its deadline: the objects in the call fail
        OracleRaised                   the server's oracle raised on the batch
        OracleUnavailable              every attempt found it UNAVAILABLE (also a RewardUnavailable)
    BatchFailed(RuntimeError)          some object in a batch is at fault, not the service:
      ObjectsRaised                    the oracle raised on the batch
      BadAnswer                        its answer has the wrong length or type
                                       (a batch that fails is scored again object by object)
"""


class RewardError(ValueError):
    """A reward returned something a GFlowNet cannot train on (NaN, inf, R <= 0), or too many
    objects failed."""


class RewardServiceError(RuntimeError):
    """The reward service itself failed (not one object's reward): the run cannot go on."""


class RewardUnavailable(RewardServiceError):
    """The reward service is down or restarting: the run waits for it (reward.unavailable_wait_s)."""


class OracleError(RewardServiceError):
    """A remote oracle call failed: the message names the address, the status code and the details."""


class OracleDeadline(OracleError):
    """A call ran past its deadline: the objects in it failed (the oracle may still be busy)."""


class OracleRaised(OracleError):
    """The server's oracle raised on the batch (INTERNAL)."""


class OracleUnavailable(OracleError, RewardUnavailable):
    """Every attempt found the oracle UNAVAILABLE (down or restarting): worth waiting for."""


class BatchFailed(RuntimeError):
    """Some object in a batch, not the service, is at fault: the batch is scored again object
    by object to find which."""


class ObjectsRaised(BatchFailed):
    """The oracle raised on a batch."""


class BadAnswer(BatchFailed, ValueError):
    """An oracle's answer has the wrong length or type."""
