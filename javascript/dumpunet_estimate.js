// Embedding Estimate tab: hand the job a task id, so that the webui's own progress bar follows it
// and shows each learning step's loss while the estimate runs. Presentation only.
function dumpunetEstimateSubmit() {
    var values = Array.from(arguments);
    var taskId = randomId();
    var report = gradioApp().getElementById("dumpunet_estimate_report");
    requestProgress(
        taskId,
        gradioApp().getElementById("dumpunet_estimate_progress"),
        null,
        function() {},
        function(progress) {
            if (report && progress.textinfo) {
                report.textContent = progress.textinfo;
            }
        }
    );
    values[0] = taskId;
    return values;
}
