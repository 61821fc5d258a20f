"""trl_aem: AEM (Adaptive Entropy Modulation, arXiv:2605.00425) for agentic RL on Hugging Face TRL."""

from .config import AEMConfig
from .modulation import aem_coefficients
from .trainer import AEMTrainer

__version__ = "0.1.0"

__all__ = ["AEMConfig", "AEMTrainer", "aem_coefficients", "__version__"]
