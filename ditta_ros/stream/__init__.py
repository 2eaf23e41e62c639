"""Camera streams: one per camera, whatever the method, with phases, status and control.

    config    what a stream is told (StreamConfig, WarmupConfig) and tells (Phase, StreamStatus)
    base      what every stream shares: the lock, phase events, frame continuity
    ditta     DittaStream: warm-up, background adaptation, swap (methods ditta and none)
    peers     PeerStream: the peer methods, adapting in the camera's thread
    worker    the background adaptation thread and the cancellable teacher
    methods   the table of methods and make_stream
"""
