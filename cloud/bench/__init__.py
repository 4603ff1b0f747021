"""`facepipe bench`: the whole pipeline against the models' own cost, a burst, a paced client, cold starts,
and a paper model of the same work on AWS Lambda."""
