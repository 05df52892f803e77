"""What every tab shares is the lab itself (lab.Lab): the workspace, the loaded model and the presets."""

from lab import Lab as AppContext

__all__ = ["AppContext"]
