"""rosbag2 workflows: ``io`` (reading and writing bags), ``make`` (labelled
evaluation bags from face folders), ``evaluate`` (in-process or against a live
node), ``replay`` (play and record) and ``cli`` (``clifer bag``)."""
