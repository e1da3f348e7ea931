-- A run's steps as its agent last reported them (issue 15's step list): a JSON array of
-- {id, status, startTime, finishTime, exitCode, dependsOn}, replaced whole by each report, as
-- output_images and dependencies are kept. NULL until the agent knows the run's plan.
ALTER TABLE runs ADD COLUMN steps TEXT;
