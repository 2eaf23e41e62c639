"""ditta_lifecycle_node: the ditta node as a managed (lifecycle) node.

    configure   parameters read; models and teacher loaded; publishers, services, status timer
    activate    camera subscriptions: frames in, masks out
    deactivate  subscriptions removed; each stream keeps its state (an adapted decoder stays)
    cleanup     everything configure made is released: threads joined, models freed, GPU memory
                returned
    shutdown    from any state

With `autostart` (the default) it configures and activates itself at start and then behaves as
ditta_node; with autostart false it waits for the transitions (`ros2 lifecycle set /ditta
configure`, or a lifecycle manager such as Nav2's). A failed configure (a missing checkpoint, ...)
leaves it unconfigured, with the reason in the log, and running.
"""
import sys

from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn

from ditta_ros.node import DittaNodeBase, run


class DittaLifecycleNode(DittaNodeBase, LifecycleNode):
    """See the module docstring."""

    def __init__(self, **kwargs):
        LifecycleNode.__init__(self, 'ditta', **kwargs)
        self._setup()

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self._load()
        except Exception as exc:  # stay unconfigured and say why; a later configure may work
            self.get_logger().error(f'configure failed: {exc}')
            self._unload()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info('configured (inactive: activate to process frames)')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self._subscribe()
        self.get_logger().info(self._ready_line())
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._unsubscribe()
        self.get_logger().info('inactive: camera subscriptions removed')
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._unload()
        self.get_logger().info('unconfigured: models and streams released')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._unload()
        return TransitionCallbackReturn.SUCCESS


def autostart(node: DittaLifecycleNode) -> None:
    """configure + activate when the autostart parameter says so."""
    if not node.p['autostart']:
        node.get_logger().info('waiting for lifecycle transitions (autostart is false)')
        return
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        raise RuntimeError('autostart: configure failed (see the error above)')
    node.trigger_activate()


def main(args=None) -> int:
    return run(DittaLifecycleNode, autostart, args)


if __name__ == '__main__':
    sys.exit(main())
