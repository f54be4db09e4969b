"""SL651-2014 (水文监测数据通信规约): hydrological stations that dial in to the centre.

The station (遥测站) is the TCP client; streetsense is the centre (中心站) and
listens. ``frame`` splits and checks HEX/BCD frames, ``body`` decodes their
elements, ``listener`` serves many stations at once and confirms what the
standard says to confirm.
"""
